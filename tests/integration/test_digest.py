"""Digests, notifications, subscriptions and reply-by-email, as a subscriber
sees them: mails captured by a real SMTP server on loopback (aiosmtpd) and
parsed back with Python's email package; content from the built-in local
feed (rows of local_items); replies through a real Dovecot (conftest's
`dovecot` fixture) and `run --once`."""
import email
import email.policy
import glob
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
import urllib.parse

import pytest

from conftest import state_connect, state_target

MAILFEED = os.environ.get("MAILFEED_BIN", "/work/main/build/asan/mailfeed")

SINK = r'''
import asyncio, json, os, sys
from aiosmtpd.smtp import SMTP
out, mode = sys.argv[1], sys.argv[2]
class Sink:
    n = 0
    async def handle_RCPT(self, server, session, env, address, options):
        if mode == "reject" and address.startswith("gone"):
            return "550 5.1.1 no such user"
        env.rcpt_tos.append(address)
        return "250 OK"
    async def handle_DATA(self, server, session, env):
        if mode == "busy":
            return "451 4.3.0 try again later"
        Sink.n += 1
        base = os.path.join(out, "%04d" % Sink.n)
        with open(base + ".eml", "wb") as f:
            f.write(env.original_content or env.content)
        with open(base + ".json.tmp", "w") as f:
            json.dump({"mail_from": env.mail_from, "rcpt_tos": env.rcpt_tos}, f)
        os.rename(base + ".json.tmp", base + ".json")
        return "250 2.0.0 queued as %04d" % Sink.n
async def main():
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: SMTP(Sink(), hostname="localhost"),
                                   "127.0.0.1", 0)
    print(srv.sockets[0].getsockname()[1], flush=True)
    await srv.serve_forever()
asyncio.run(main())
'''


class Sink:
    def __init__(self, tmp_path, mode="ok"):
        self.dir = tmp_path / ("sink-" + mode)
        self.dir.mkdir()
        script = tmp_path / "sink.py"
        script.write_text(SINK)
        self.proc = subprocess.Popen(["/usr/bin/python3", "-W", "ignore", str(script),
                                      str(self.dir), mode], stdout=subprocess.PIPE)
        self.port = int(self.proc.stdout.readline())

    def messages(self):
        out = []
        for meta in sorted(glob.glob(str(self.dir / "*.json"))):
            raw = open(meta[:-5] + ".eml", "rb").read()
            out.append((json.load(open(meta)),
                        email.message_from_bytes(raw, policy=email.policy.default), raw))
        return out

    def stop(self):
        self.proc.terminate()
        self.proc.wait(5)


@pytest.fixture
def sink(tmp_path):
    s = Sink(tmp_path)
    yield s
    s.stop()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cfg:
    pass


def make_config(tmp_path, smtp_port, extra="", subscriber="daily", imap_port=None,
                replies=False):
    c = Cfg()
    c.dir = tmp_path
    c.state = state_target(tmp_path)
    secret = tmp_path / "secret"
    secret.write_bytes(os.urandom(32))
    os.chmod(secret, 0o600)
    pw = tmp_path / "imap.pass"
    pw.write_text("alicepw\n")
    os.chmod(pw, 0o600)
    c.path = str(tmp_path / "mailfeed.conf")
    text = f"""
        [gateway]
        state = {c.state}
        reply_address = feed@example.org
        secret_file = {secret}

        [feed]
        backend = local
        dir = {tmp_path}/feed

        [account staff]
        host = 127.0.0.1
        port = {imap_port or free_port()}
        tls = none
        username = alice
        password_file = {pw}

        [mailbox team]
        account = staff
        folder = Team
        group = team-group
        after = keep
        start = all

        [smtp]
        url = smtp://127.0.0.1:{smtp_port}
        from = Feed digest <digest@example.org>

        [digest]
        hour = 7
        timezone = UTC
        max_items = 50
        """
    if replies:
        text += """
        [replies]
        account = staff
        folder = Replies
        """
    if subscriber:
        text += f"""
        [subscriber bob@example.org]
        groups = team
        frequency = {subscriber}
        """
    open(c.path, "w").write(textwrap.dedent(text) + textwrap.dedent(extra))
    return c


def mf(cfg, *args, timeout=60):
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:exitcode=99")
    return subprocess.run([MAILFEED, "-c", cfg.path, *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def db(cfg):
    return state_connect(cfg.state)


def add_item(cfg, key, text, subject=None, parent=None, created=None,
             author=("Ann", "ann@example.org"), grp="team-group"):
    con = db(cfg)
    (rowid,) = con.execute(
        "INSERT INTO local_items(key, grp, parent, author_name, author_email, subject, text,"
        " created) VALUES(?,?,?,?,?,?,?,?) RETURNING id",
        (key, grp, parent, author[0], author[1], subject, text,
         created or int(time.time()) - 5)).fetchone()
    con.commit()
    con.close()
    return rowid


def prepare(cfg):
    """Creates the state and the subscriber rows (subscribed a minute ago)."""
    r = mf(cfg, "status")
    assert r.returncode == 0, r.stderr
    r = mf(cfg, "digest")  # seeds [subscriber] sections; nothing due yet
    assert r.returncode == 0, r.stderr
    con = db(cfg)
    con.execute("UPDATE subscribers SET since=?, last_sent=NULL", (int(time.time()) - 60,))
    con.commit()
    con.close()


def parts(msg):
    text = html = None
    for p in msg.walk():
        if p.get_content_type() == "text/plain":
            text = p.get_content()
        elif p.get_content_type() == "text/html":
            html = p.get_content()
    return text, html


pytestmark = pytest.mark.skipif(not os.access(MAILFEED, os.X_OK),
                                reason="mailfeed binary not built")


def test_digest_now_content_and_headers(tmp_path, sink):
    cfg = make_config(tmp_path, sink.port)
    prepare(cfg)
    hostile = ("<script>alert('x')</script> & <b>bold</b>\n"
               "RTL: \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 emoji \U0001F600\n"
               + "y" * 1500)
    p1 = add_item(cfg, "k1", hostile, subject="Budget <Q3>\r\nBcc: evil@example.org")
    add_item(cfg, "k2", "I agree", parent=p1, author=("Carl \u00c9", "carl@example.org"))
    r = mf(cfg, "digest", "--now")
    assert r.returncode == 0, r.stderr
    msgs = sink.messages()
    assert len(msgs) == 1
    meta, m, raw = msgs[0]
    assert meta["rcpt_tos"] == ["bob@example.org"]
    assert meta["mail_from"] == "digest@example.org"
    assert b"\nBcc:" not in raw and b"evil@example.org>" not in raw.split(b"\r\n\r\n")[0]
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert m["Subject"].startswith("Digest: team \u2014 ")
    assert m["To"] == "bob@example.org"
    assert "digest@example.org" in m["From"]
    assert m["Date"] and m["Message-ID"].endswith("@example.org>")
    assert m["Auto-Submitted"] == "auto-generated"
    assert m["X-Auto-Response-Suppress"] == "All"
    assert m["List-Id"] == "<mailfeed.example.org>"
    unsub = m["List-Unsubscribe"]
    assert re.fullmatch(r"<mailto:feed\+[a-z2-7]+@example\.org\?subject=unsubscribe>", unsub)
    assert m.get_content_type() == "multipart/alternative"
    text, html = parts(m)
    assert "<script>alert('x')</script> & <b>bold</b>" in text
    assert "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 emoji \U0001F600" in text
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "\U0001F600" in html
    assert "I agree" in text and "Carl \u00c9" in text
    links = re.findall(r"mailto:feed\+[a-z2-7]+@example\.org\?subject=[^\s\"<>]+", text)
    assert links, text
    subj = urllib.parse.unquote(links[0].split("subject=", 1)[1])
    assert subj.startswith("Re: Budget <Q3> Bcc:")
    # recorded: sent once, Message-ID known for In-Reply-To matching
    con = db(cfg)
    assert [tuple(r) for r in con.execute("SELECT state FROM digest_runs")] == [("sent",)]
    assert con.execute("SELECT COUNT(*) FROM sent_ids WHERE message_id=?",
                       (m["Message-ID"].strip("<>"),)).fetchone()[0] == 1
    assert con.execute("SELECT last_sent FROM subscribers").fetchone()[0] is not None
    con.close()
    # nothing new: nothing sent
    r = mf(cfg, "digest", "--now")
    assert r.returncode == 0, r.stderr
    assert len(sink.messages()) == 1


def test_due_period_sent_once_and_not_after_crash(tmp_path, sink):
    cfg = make_config(tmp_path, sink.port)
    prepare(cfg)
    # the subscriber's hour is always past: every day is a new period
    con = db(cfg)
    con.execute("UPDATE subscribers SET hour=0, since=0")
    con.commit()
    con.close()
    add_item(cfg, "k1", "news")
    for _ in range(2):
        r = mf(cfg, "digest")
        assert r.returncode == 0, r.stderr
    assert len(sink.messages()) == 1
    # a crash left today's next period as 'sending': never sent again
    con = db(cfg)
    today = time.strftime("d:%Y-%m-%d", time.gmtime())
    con.execute("DELETE FROM digest_runs")
    con.execute("INSERT INTO digest_runs(email, period, state, at)"
                " VALUES('bob@example.org',?,'sending',0)", (today,))
    con.commit()
    con.close()
    add_item(cfg, "k2", "more news")
    r = mf(cfg, "digest")
    assert r.returncode == 0, r.stderr
    assert "digest.maybe_sent" in r.stderr
    assert len(sink.messages()) == 1


def test_each_sends_one_notification_per_post(tmp_path, sink):
    cfg = make_config(tmp_path, sink.port, subscriber="each")
    prepare(cfg)
    p1 = add_item(cfg, "k1", "first", subject="One")
    add_item(cfg, "k2", "second", subject="Two")
    add_item(cfg, "k3", "a comment", parent=p1)
    r = mf(cfg, "digest")
    assert r.returncode == 0, r.stderr
    msgs = sink.messages()
    assert sorted(m["Subject"] for _, m, _ in msgs) == ["[team] One", "[team] Two"]
    for _, m, _ in msgs:
        assert re.fullmatch(r"feed\+[a-z2-7]+@example\.org", m["Reply-To"])
        assert m["In-Reply-To"] is None
    assert msgs[0][1]["Reply-To"] != msgs[1][1]["Reply-To"]
    r = mf(cfg, "digest")
    assert len(sink.messages()) == 2


def test_weekly_waits_for_its_day(tmp_path, sink):
    cfg = make_config(tmp_path, sink.port, subscriber="weekly")
    prepare(cfg)
    add_item(cfg, "k1", "news")
    con = db(cfg)
    # subscribed now: the last weekly moment lies before it, nothing is due
    con.execute("UPDATE subscribers SET since=?", (int(time.time()) - 60,))
    con.commit()
    r = mf(cfg, "digest")
    assert r.returncode == 0, r.stderr
    assert sink.messages() == []
    # subscribed long ago: the current week's digest goes out, once
    con.execute("UPDATE subscribers SET since=0")
    con.commit()
    con.close()
    mf(cfg, "digest")
    mf(cfg, "digest")
    msgs = sink.messages()
    assert len(msgs) == 1
    con = db(cfg)
    (period,) = con.execute("SELECT period FROM digest_runs WHERE state='sent'").fetchone()
    con.close()
    assert re.fullmatch(r"w:\d{4}-W\d\d", period)


def test_subscribe_and_unsubscribe_commands(tmp_path, sink):
    cfg = make_config(tmp_path, sink.port, subscriber=None)
    r = mf(cfg, "subscribe", "Dana@Example.org", "--groups", "team,0F9000000000001",
           "--weekly", "--hour", "9", "--tz", "Europe/Berlin")
    assert r.returncode == 0, r.stderr
    con = db(cfg)
    row = con.execute("SELECT email, groups, frequency, hour, tz FROM subscribers").fetchone()
    assert tuple(row) == ("dana@example.org", "team,0F9000000000001", "weekly", 9, "Europe/Berlin")
    con.close()
    for bad in (["x@y.org", "--groups", "team", "--tz", "Mars/Olympus"],
                ["not-an-email", "--groups", "team"],
                ["x@y.org", "--groups", "bad group!"],
                ["x@y.org", "--groups", "team", "--hour", "24"],
                ["x@y.org"]):
        r = mf(cfg, "subscribe", *bad)
        assert r.returncode == 2, (bad, r.stdout, r.stderr)
        assert r.stderr.strip()
    r = mf(cfg, "unsubscribe", "dana@example.org")
    assert r.returncode == 0, r.stderr
    con = db(cfg)
    assert con.execute("SELECT frequency FROM subscribers").fetchone()[0] == "never"
    con.close()
    assert mf(cfg, "unsubscribe", "nobody@example.org").returncode == 1
    for cmd in ("digest", "subscribe", "unsubscribe"):
        r = mf(cfg, cmd, "--help")
        assert r.returncode == 0 and "usage:" in r.stdout


def test_relay_refusals(tmp_path):
    busy = Sink(tmp_path, "busy")
    try:
        cfg = make_config(tmp_path, busy.port)
        prepare(cfg)
        add_item(cfg, "k1", "news")
        r = mf(cfg, "digest", "--now")
        assert r.returncode == 1
        assert "temporary" in r.stderr
        con = db(cfg)
        # 4xx: nothing recorded as sent, the next run tries again
        assert con.execute("SELECT COUNT(*) FROM digest_runs").fetchone()[0] == 0
        assert con.execute("SELECT last_sent FROM subscribers").fetchone()[0] is None
        con.close()
    finally:
        busy.stop()


# --- reply-by-email through Dovecot ------------------------------------

try:
    from conftest import dovecot  # noqa: F401  (the fixture, when conftest provides it)
    HAVE_DOVECOT = True
except ImportError:
    HAVE_DOVECOT = False

needs_dovecot = pytest.mark.skipif(not HAVE_DOVECOT, reason="conftest dovecot fixture missing")


def reply_mail(to, frm, subject, body, extra=""):
    return ("From: Bob <%s>\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <r%d@example.org>\r\n"
            "Date: Mon, 23 Nov 2026 08:00:00 +0000\r\n%s\r\n%s\r\n" %
            (frm, to, subject, int(time.time() * 1000) % 10**9, extra, body)).encode()


def digest_reply_address(cfg, sink):
    p1 = add_item(cfg, "k1", "Shall we meet?", subject="Meeting")
    r = mf(cfg, "digest", "--now")
    assert r.returncode == 0, r.stderr
    text, _ = parts(sink.messages()[-1][1])
    addr = re.search(r"mailto:(feed\+[a-z2-7]+@example\.org)\?subject=", text).group(1)
    return p1, addr


def run_once(cfg):
    r = mf(cfg, "run", "--once", timeout=120)
    return r


@needs_dovecot
def test_reply_becomes_comment_and_refusals(dovecot, tmp_path, sink):
    dovecot.create_folder("alice", "Team")
    dovecot.create_folder("alice", "Replies")
    cfg = make_config(tmp_path, sink.port, imap_port=dovecot.imap_port, replies=True)
    prepare(cfg)
    post, addr = digest_reply_address(cfg, sink)
    n_before = len(sink.messages())
    dovecot.append("alice", "Replies", reply_mail(addr, "bob@example.org", "Re: Meeting",
                                                  "Yes, Tuesday.\n\nOn Monday Ann wrote:\n> Shall we meet?"))
    dovecot.append("alice", "Replies", reply_mail(addr, "mallory@example.org", "Re: Meeting",
                                                  "I am not Bob"))
    forged = addr.replace("+", "+a", 1)
    dovecot.append("alice", "Replies", reply_mail(forged, "bob@example.org", "Re: Meeting",
                                                  "forged"))
    dovecot.append("alice", "Replies", reply_mail(addr, "bob@example.org", "Re: Meeting",
                                                  "auto", "Auto-Submitted: auto-replied\r\n"))
    run_once(cfg)
    con = db(cfg)
    rows = con.execute("SELECT parent, author_email, text FROM local_items WHERE parent IS NOT"
                       " NULL").fetchall()
    assert [tuple(r) for r in rows] == [(post, "bob@example.org", "Yes, Tuesday.")], rows
    reasons = [r[0] for r in con.execute("SELECT reason FROM messages WHERE state='skipped'")]
    con.close()
    assert any("belongs to someone else" in r for r in reasons), reasons
    assert any("not one this feed issued" in r for r in reasons), reasons
    # nobody is mailed: mallory is neither verified nor a subscriber (her
    # From may be anyone's), a forged token gets no answer, the robot none
    notices = [m for _, m, _ in sink.messages()[n_before:]]
    assert notices == []


@needs_dovecot
def test_frequency_and_unsubscribe_by_email(dovecot, tmp_path, sink):
    dovecot.create_folder("alice", "Team")
    dovecot.create_folder("alice", "Replies")
    cfg = make_config(tmp_path, sink.port, imap_port=dovecot.imap_port, replies=True)
    prepare(cfg)
    _post, addr = digest_reply_address(cfg, sink)
    unsub = re.search(r"mailto:(feed\+[a-z2-7]+@example\.org)",
                      sink.messages()[-1][1]["List-Unsubscribe"]).group(1)
    dovecot.append("alice", "Replies", reply_mail(addr, "bob@example.org", "weekly", ""))
    run_once(cfg)
    con = db(cfg)
    assert con.execute("SELECT frequency FROM subscribers").fetchone()[0] == "weekly"
    con.close()
    dovecot.append("alice", "Replies", reply_mail(unsub, "bob@example.org", "unsubscribe", ""))
    run_once(cfg)
    con = db(cfg)
    assert con.execute("SELECT frequency FROM subscribers").fetchone()[0] == "never"
    con.close()
    answers = [m for _, m, _ in sink.messages() if m["Subject"] == "Your digest subscription"]
    assert len(answers) == 2
