"""Digest subscribers taken from the feed ([digest] subscribers = feed):
the members of a mapped Chatter group, read with the CollaborationGroupMember
query from the Chatter double, get what their membership's notification
frequency says (P each post, D daily, W weekly, N nothing).  Mails are
captured by the conftest SMTP sink; posts are put into the double with
build/asan/tests/feedprobe."""
import json
import os
import subprocess
import time
import urllib.request

import pytest

from conftest import run_mailfeed, state_db, write_config, Secret

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PROBE = os.environ.get("FEEDPROBE_BIN", os.path.join(ROOT, "build/asan/tests/feedprobe"))
DOUBLE = os.path.join(HERE, "doubles", "chatter_double.py")
GROUP = "0F9XX0000000001AAA"
BOARD = "0F9XX0000000002AAA"


def member(n, email, freq, name=None):
    return {"Id": "005XX00000000%02dAAA" % n, "Name": name or email.split("@")[0].title(),
            "Email": email, "NotificationFrequency": freq, "CollaborationRole": "Standard"}


@pytest.fixture
def feed(tmp_path, smtp_sink, tls_ca):
    if not os.access(PROBE, os.X_OK):
        pytest.skip("feedprobe not built: make build/asan/tests/feedprobe")
    key, pub = tmp_path / "key.pem", tmp_path / "pub.pem"
    subprocess.run(["/usr/bin/openssl", "genrsa", "-out", str(key), "2048"], check=True,
                   capture_output=True)
    os.chmod(key, 0o600)
    subprocess.run(["/usr/bin/openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)],
                   check=True, capture_output=True)
    proc = subprocess.Popen(["/usr/bin/python3", DOUBLE, "--public-key", str(pub)],
                            stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())

    class Env:
        base = "http://127.0.0.1:%d" % port
        sink = smtp_sink

        def config(self, subscribers="feed", extra_sections=None):
            sections = {
                "account staff": {"host": "127.0.0.1", "port": 1, "tls": "none",
                                  "username": "staff", "password_file": Secret("x")},
                "mailbox fundraising": {"account": "staff", "folder": "Fundraising",
                                        "group": GROUP, "after": "keep"},
                "mailbox board": {"account": "staff", "folder": "Board", "group": BOARD,
                                  "after": "keep"},
            }
            sections.update(extra_sections or {})
            self.cfg = write_config(
                tmp_path,
                feed={"backend": "chatter", "instance_url": self.base,
                      "login_url": self.base, "client_id": "3MVG9TESTCLIENT",
                      "private_key_file": str(key), "username": "integration@acme.example"},
                smtp={"url": "smtp://127.0.0.1:%d" % smtp_sink.port,
                      "from": "Feed digest <digest@example.org>", "ca_file": tls_ca.ca_file},
                digest={"hour": 0, "timezone": "UTC", "subscribers": subscribers},
                **sections)
            return self.cfg

        def control(self, **c):
            req = urllib.request.Request(self.base + "/__control", data=json.dumps(c).encode(),
                                         method="POST")
            urllib.request.urlopen(req).read()

        def state(self):
            return json.loads(urllib.request.urlopen(self.base + "/__state").read())

        def post(self, key, text, group=GROUP):
            item = {"id": 1, "key": key, "kind": "post", "group": group,
                    "author_name": "Ann Example", "author_email": "ann@example.org",
                    "subject": text, "text": text + " (details)", "hashtags": []}
            out = subprocess.run([PROBE, self.cfg], input=json.dumps(
                {"op": "deliver", "items": [item]}), capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            res = json.loads(out.stdout)["results"][0]
            assert res["status"] == "ok", res
            # a digest takes entries up to the second before it starts
            time.sleep(int(time.time()) + 1 - time.time())
            return res["remote_id"]

        def digest(self, *args):
            r = run_mailfeed(self.cfg, "digest", *args)
            assert "ERROR: AddressSanitizer" not in r.stderr, r.stderr
            return r

        def mails(self):
            """{recipient: [(Subject, message)]} of everything the sink got."""
            out = {}
            for env, msg, _raw in smtp_sink.messages():
                for rcpt in env["rcpt_tos"]:
                    out.setdefault(rcpt, []).append((msg["Subject"], msg))
            return out

        def backdate(self):
            """Feed members first seen long ago: the current period is due."""
            con = state_db(self.cfg)
            con.execute("UPDATE feed_subscribers SET since=0, last_sent=NULL")
            con.commit()
            con.close()

    env = Env()
    yield env
    proc.terminate()
    proc.wait()


def periods(cfg, email):
    con = state_db(cfg)
    rows = [r[0] for r in con.execute(
        "SELECT period FROM digest_runs WHERE email=? AND state='sent' ORDER BY period",
        (email,))]
    con.close()
    return rows


def test_members_get_what_their_membership_says(feed):
    cfg = feed.config()
    feed.control(query_page_size=2, members={GROUP: [
        member(1, "Alice@Example.org", "P"),
        member(2, "dave@example.org", "D"),
        member(3, "wendy@example.org", "W"),
        member(4, "nora@example.org", "N"),
        {"Id": "005XX0000000005AAA", "Name": "No Mail", "Email": None,
         "NotificationFrequency": "D", "CollaborationRole": "Standard"},
    ], BOARD: [member(2, "dave@example.org", "W")]})
    feed.post("p1", "Spring appeal")
    feed.post("p2", "Volunteer day")
    feed.post("b1", "Board minutes", group=BOARD)
    r = feed.digest()  # reads the members; nothing is due before they were seen
    assert r.returncode == 0, r.stderr
    # the member without an email address is left out
    assert "digest.members group=%s each=1 daily=1 weekly=1 never=1" % GROUP in r.stderr
    assert feed.mails() == {}
    # the query as sent, escaped, and followed through nextRecordsUrl pages
    st = feed.state()
    assert "SELECT MemberId, Member.Email, Member.Name, NotificationFrequency FROM " \
           "CollaborationGroupMember WHERE CollaborationGroupId = '%s'" % GROUP in st["queries"]
    assert any(q["path"].startswith("/services/data/v62.0/query/01g") for q in st["requests"])

    feed.backdate()
    r = feed.digest()
    assert r.returncode == 0, r.stderr
    mails = feed.mails()
    assert sorted(mails) == ["alice@example.org", "dave@example.org", "wendy@example.org"]
    # P: one notification per post of the group
    subjects = sorted(s for s, _ in mails["alice@example.org"])
    assert len(subjects) == 2 and all(s.startswith("[fundraising] ") for s in subjects)
    assert "Spring appeal" in subjects[0] and "Volunteer day" in subjects[1], subjects
    # D: one daily digest of fundraising; W in board: a separate weekly one
    dave = sorted(s for s, _ in mails["dave@example.org"])
    assert len(dave) == 2 and all(s.startswith("Digest: ") for s in dave), dave
    assert [p[:2] for p in periods(cfg, "dave@example.org")] == ["d:", "w:"]
    daily = [m for s, m in mails["dave@example.org"] if "fundraising" in s][0]
    text = daily.get_body(("plain",)).get_content()
    assert "Spring appeal" in text and "Board minutes" not in text
    # W: one weekly digest
    assert len(mails["wendy@example.org"]) == 1
    assert [p[:2] for p in periods(cfg, "wendy@example.org")] == ["w:"]
    # once per period
    r = feed.digest()
    assert r.returncode == 0, r.stderr
    assert sum(len(v) for v in feed.mails().values()) == 5
    # status lists them, marked as coming from the feed
    out = json.loads(run_mailfeed(cfg, "status", "--json").stdout)
    rows = {(d["subscriber"], d["frequency"]): d["source"] for d in out["digests"]}
    assert rows == {("alice@example.org", "each"): "feed", ("dave@example.org", "daily"): "feed",
                    ("dave@example.org", "weekly"): "feed",
                    ("wendy@example.org", "weekly"): "feed"}


def test_own_subscription_overrides_the_membership(feed):
    cfg = feed.config(extra_sections={"subscriber alice@example.org": {
        "groups": "fundraising", "frequency": "weekly"}})
    feed.control(members={GROUP: [member(1, "alice@example.org", "P"),
                                  member(2, "bob@example.org", "P")]})
    feed.post("p1", "Spring appeal")
    feed.post("p2", "Volunteer day")
    assert feed.digest().returncode == 0
    feed.backdate()
    con = state_db(cfg)
    con.execute("UPDATE subscribers SET since=0")
    con.commit()
    con.close()
    # bob, a feed member only, unsubscribes on the command line
    r = run_mailfeed(cfg, "unsubscribe", "bob@example.org")
    assert r.returncode == 0, r.stderr
    r = feed.digest()
    assert r.returncode == 0, r.stderr
    mails = feed.mails()
    # alice's own weekly subscription wins over her 'every post' membership
    assert list(mails) == ["alice@example.org"]
    assert len(mails["alice@example.org"]) == 1
    assert mails["alice@example.org"][0][0].startswith("Digest: fundraising")
    assert [p[:2] for p in periods(cfg, "alice@example.org")] == ["w:"]
    out = json.loads(run_mailfeed(cfg, "status", "--json").stdout)
    assert {(d["subscriber"], d["frequency"], d["source"]) for d in out["digests"]} == {
        ("alice@example.org", "weekly", "config"), ("bob@example.org", "never", "cli")}


def test_member_who_leaves_or_stops_gets_no_more_digests(feed):
    cfg = feed.config()
    feed.control(members={GROUP: [member(1, "erin@example.org", "D"),
                                  member(2, "frank@example.org", "D"),
                                  member(3, "gina@example.org", "D")]})
    feed.post("p1", "Spring appeal")
    r = feed.digest("--now")
    assert r.returncode == 0, r.stderr
    assert sorted(feed.mails()) == ["erin@example.org", "frank@example.org",
                                    "gina@example.org"]
    # erin leaves the group, frank switches his email setting to never
    feed.control(members={GROUP: [member(2, "frank@example.org", "N"),
                                  member(3, "gina@example.org", "D")]})
    feed.post("p2", "Volunteer day")
    r = feed.digest("--now")
    assert r.returncode == 0, r.stderr
    counts = {k: len(v) for k, v in feed.mails().items()}
    assert counts == {"erin@example.org": 1, "frank@example.org": 1, "gina@example.org": 2}
    assert run_mailfeed(cfg, "digest", "--now", "--to", "erin@example.org").returncode == 1
    # the member list cannot be read: the last known one is kept, said once
    feed.post("p3", "Board minutes")
    feed.control(members={GROUP: [member(1, "erin@example.org", "D"),
                                  member(3, "gina@example.org", "D")]}, fail_next=[503])
    r = feed.digest("--now")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("digest.members_failed") == 1, r.stderr
    assert "keeping the last known members" in r.stderr
    counts = {k: len(v) for k, v in feed.mails().items()}
    assert counts == {"erin@example.org": 1, "frank@example.org": 1, "gina@example.org": 3}


def test_email_command_makes_a_members_subscription_its_own(feed, dovecot):
    """A member answers a digest with "weekly": from then on that address
    has its own weekly subscription of the member's groups, whatever the
    group settings say."""
    for folder in ("Fundraising", "Board", "Replies"):
        dovecot.create_folder("alice", folder)
    cfg = feed.config(extra_sections={
        "account staff": {"host": "127.0.0.1", "port": dovecot.imap_port, "tls": "none",
                          "username": "alice", "password_file": Secret("alicepw")},
        "replies": {"account": "staff", "folder": "Replies"}})
    feed.control(members={GROUP: [member(1, "carl@example.org", "D")],
                          BOARD: [member(1, "carl@example.org", "P")]})
    feed.post("p1", "Spring appeal")
    r = feed.digest("--now")
    assert r.returncode == 0, r.stderr
    (subject, digest), = feed.mails()["carl@example.org"]
    text = digest.get_body(("plain",)).get_content()
    addr = text.split("mailto:", 1)[1].split("?", 1)[0]
    dovecot.append("alice", "Replies", (
        "From: Carl <carl@example.org>\r\nTo: %s\r\nSubject: weekly\r\n"
        "Message-ID: <cmd1@example.org>\r\nDate: Mon, 23 Nov 2026 08:00:00 +0000\r\n\r\n"
        "weekly\r\n" % addr).encode())
    r = run_mailfeed(cfg, "run", "--once", timeout=120)
    assert "ERROR: AddressSanitizer" not in r.stderr, r.stderr
    assert "reply.command from=carl@example.org command=weekly" in r.stderr, r.stderr
    con = state_db(cfg)
    row = con.execute("SELECT groups, frequency, source FROM subscribers"
                      " WHERE email='carl@example.org'").fetchone()
    con.close()
    assert sorted(row[0].split(",")) == sorted([GROUP, BOARD])
    assert (row[1], row[2]) == ("weekly", "email")
    out = json.loads(run_mailfeed(cfg, "status", "--json").stdout)
    assert [(d["subscriber"], d["frequency"], d["source"]) for d in out["digests"]] == [
        ("carl@example.org", "weekly", "email")]
    answers = [m for s, m in feed.mails()["carl@example.org"]
               if s == "Your digest subscription"]
    assert len(answers) == 1
    assert "one digest a week" in answers[0].get_body(("plain",)).get_content()
