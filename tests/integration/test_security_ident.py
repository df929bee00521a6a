"""Attacks on identity and on what the gateway keeps, through the real
daemon (Dovecot on loopback, the local feed):

- a forged From with a forged or commented Authentication-Results is never
  taken for the person: the item says unverified and why, allow_senders
  refuses it, inspect shows it, check-config warns without trusted_authserv;
- a forged copy of a Message-ID that arrives first does not suppress the
  genuine message;
- the state is private whatever the umask, raw mail is erased after
  keep_raw (also after `dead drop`) and leaves no trace in the file;
- bidi override characters never reach the Atom and text feeds.
"""
import base64
import json
import os
import sqlite3
import subprocess

from conftest import MAILFEED, run_mailfeed, write_config

MX = "mx.test.example"


def mail(mid, body, frm="boss@example.org", auth=(), subject="Budget", date_min=0, extra=""):
    head = "".join("Authentication-Results: %s\r\n" % a for a in auth) + extra
    return ("%sFrom: The Boss <%s>\r\nTo: team@example.org\r\nSubject: %s\r\n"
            "Message-ID: <%s>\r\nDate: Mon, 23 Nov 2026 07:%02d:00 +0000\r\n\r\n%s\r\n"
            % (head, frm, subject, mid, date_min, body)).encode()


GENUINE = [MX + "; dkim=pass header.d=mail.example.org; spf=pass smtp.mailfrom=example.org"]
FORGED_BELOW = [MX + "; dkim=none; spf=fail smtp.mailfrom=evil.example; dmarc=fail",
                MX + "; dmarc=pass header.from=example.org"]
COMMENTED = [MX + "; dkim=fail (dkim=pass header.d=example.org) reason=\"dmarc=pass\""]
LOOKALIKE = [MX + ".evil.example; dmarc=pass"]


def rows(cfg, sql, *args):
    con = sqlite3.connect(cfg.state)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def authors(cfg):
    return {mid: (json.loads(p)["author"]) for mid, p in rows(
        cfg, "SELECT json_extract(payload, '$.message_id'), payload FROM outbox_payloads")}


def test_forged_sender_is_never_acted_as(dovecot, tmp_path):
    dovecot.create_folder("alice", "Team")
    dovecot.create_folder("alice", "Board")
    msgs = {"genuine@x": GENUINE, "below@x": FORGED_BELOW, "comment@x": COMMENTED,
            "lookalike@x": LOOKALIKE, "none@x": []}
    for i, (mid, auth) in enumerate(msgs.items()):
        dovecot.append("alice", "Team", mail(mid, "Text %d." % i, auth=auth, date_min=i))
        dovecot.append("alice", "Board", mail("b-" + mid, "Board %d." % i, auth=auth,
                                              date_min=i))
    cfg = write_config(tmp_path, dovecot, folder="Team", after="keep",
                       gateway={"trusted_authserv": MX},
                       **{"mailbox board": {"account": dovecot.user, "folder": "Board",
                                            "group": "board", "after": "keep", "start": "all",
                                            "allow_senders": "example.org"}})
    r = run_mailfeed(cfg.path, "run", "--once", timeout=90)
    assert r.returncode == 0, r.stderr
    a = authors(cfg)
    assert a["genuine@x"]["verified"] is True
    assert "dkim=pass header.d=mail.example.org" in a["genuine@x"]["check"]
    for mid in ("below@x", "comment@x", "lookalike@x", "none@x"):
        assert a[mid]["verified"] is False, (mid, a[mid])
        assert a[mid]["check"].startswith("unverified"), a[mid]
    assert "no pass aligned" in a["below@x"]["check"]
    assert "no Authentication-Results of " + MX in a["lookalike@x"]["check"]

    # allow_senders admits only the verified sender
    assert "b-genuine@x" in a
    skipped = dict(rows(cfg, "SELECT message_id, reason FROM messages WHERE mailbox='board'"
                             " AND state='skipped'"))
    assert set(skipped) == {"b-below@x", "b-comment@x", "b-lookalike@x", "b-none@x"}
    assert all(v.startswith("sender not allowed: boss@example.org is unverified")
               for v in skipped.values()), skipped

    # inspect tells the same story
    forged = tmp_path / "forged.eml"
    forged.write_bytes(mail("f@x", "Pay now.", auth=FORGED_BELOW))
    r = run_mailfeed(cfg.path, "inspect", str(forged), "--json")
    assert r.returncode == 0, r.stderr
    sender = json.loads(r.stdout)["sender"]
    assert sender["verified"] is False and "unverified" in sender["check"]
    r = run_mailfeed(cfg.path, "inspect", str(forged))
    assert "Sender: unverified: " + MX + " found no pass aligned with example.org" in r.stdout


def test_check_config_warns_without_trusted_authserv(dovecot, tmp_path):
    dovecot.create_folder("alice", "Replies")
    cfg = write_config(tmp_path, dovecot, replies={"account": dovecot.user, "folder": "Replies"})
    r = run_mailfeed(cfg.path, "check-config")
    assert r.returncode == 0, r.stderr
    assert "warning: [replies] is set, but [gateway] trusted_authserv is not" in r.stdout
    cfg = write_config(tmp_path, dovecot, gateway={"trusted_authserv": MX},
                       replies={"account": dovecot.user, "folder": "Replies"})
    r = run_mailfeed(cfg.path, "check-config")
    assert r.returncode == 0 and "warning" not in r.stdout, r.stdout


def test_forged_copy_first_does_not_suppress_the_genuine(dovecot, tmp_path):
    dovecot.create_folder("alice", "Team")
    dovecot.create_folder("alice", "Copy")
    dovecot.append("alice", "Team", mail("q3@example.org", "Wire the money to IBAN XX00.",
                                         auth=FORGED_BELOW))
    dovecot.append("alice", "Team", mail("q3@example.org", "The Q3 budget is attached.",
                                         auth=GENUINE))
    # the genuine one again, in another folder of the same group: a true duplicate
    dovecot.append("alice", "Copy", mail("q3@example.org", "The Q3 budget is attached.",
                                         auth=GENUINE))
    cfg = write_config(tmp_path, dovecot, folder="Team", after="keep",
                       gateway={"trusted_authserv": MX},
                       **{"mailbox copy": {"account": dovecot.user, "folder": "Copy",
                                           "group": "team", "after": "keep",
                                           "start": "all"}})
    for _ in range(2):
        r = run_mailfeed(cfg.path, "run", "--once", timeout=90)
        assert r.returncode == 0, r.stderr
    texts = sorted(t for (t,) in rows(cfg, "SELECT text FROM local_items"))
    assert texts == ["The Q3 budget is attached.", "Wire the money to IBAN XX00."], texts
    states = rows(cfg, "SELECT mailbox, state, reason FROM messages ORDER BY id")
    assert states[0][1] == "delivered" and states[0][2] is None
    assert states[1][1] == "delivered"
    assert "Message-ID also used by item" in states[1][2]
    assert states[2][:2] == ("copy", "handled") and "duplicate" in states[2][2]


def test_state_private_and_raw_mail_erased(dovecot, tmp_path):
    dovecot.create_folder("alice", "Team")
    # a header kept nowhere but in the raw mail, and a file
    attached = base64.b64encode(b"file-only-55k2 salaries").decode()
    dovecot.append("alice", "Team", mail(
        "pay@example.org", "--b\r\nContent-Type: text/plain\r\n\r\nSalary list\r\n"
        "--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment;"
        " filename=pay.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n%s\r\n--b--"
        % attached, auth=GENUINE,
        extra="X-Trace: raw-only-7f3a9c\r\nMIME-Version: 1.0\r\n"
              "Content-Type: multipart/mixed; boundary=b\r\n"))
    dovecot.append("alice", "Team", mail("out@example.org", "Outsider text",
                                         frm="someone@outside.example",
                                         extra="X-Trace: raw-only-zz91q\r\n"))
    state_dir = tmp_path / "deep" / "state"
    cfg = write_config(tmp_path, dovecot, folder="Team", after="keep",
                       gateway={"trusted_authserv": MX, "keep_raw": "0s",
                                "state": str(state_dir / "state.db")},
                       mailbox={"allow_senders": "example.org"})
    cfg.state = str(state_dir / "state.db")

    def run(*args):
        p = subprocess.run([MAILFEED, "-c", cfg.path, *args], capture_output=True, text=True,
                           timeout=90, preexec_fn=lambda: os.umask(0))
        assert p.returncode in (0, 1), p.stderr
        return p

    run("run", "--once")
    assert (state_dir / "state.db").stat().st_mode & 0o777 == 0o600
    assert state_dir.stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "deep").stat().st_mode & 0o777 == 0o700
    # delivered, then erased on the next pass (keep_raw = 0s); the skipped
    # outsider stays on the dead list with its mail until dropped
    run("run", "--once")
    raw = dict(rows(cfg, "SELECT message_id, raw IS NOT NULL FROM messages m"
                         " LEFT JOIN message_bodies b ON b.message=m.id"))
    assert raw == {"pay@example.org": 0, "out@example.org": 1}, raw
    assert rows(cfg, "SELECT filename, data IS NULL FROM attachments") == [("pay.bin", 1)]
    dead = json.loads(run("dead", "--json").stdout)["dead"]
    assert len(dead) == 1
    run("dead", "drop", dead[0]["id"])
    run("run", "--once")
    assert rows(cfg, "SELECT COUNT(*) FROM message_bodies WHERE raw IS NOT NULL") == [(0,)]
    # secure_delete: the bytes are gone from the files, not only unlinked
    for name in os.listdir(state_dir):
        data = (state_dir / name).read_bytes()
        assert b"raw-only-7f3a9c" not in data, name
        assert b"file-only-55k2" not in data, name
        assert b"raw-only-zz91q" not in data, name
        if not name.endswith(".lock"):  # holds only the daemon's pid
            assert (state_dir / name).stat().st_mode & 0o077 == 0, name


def test_state_file_readable_by_others_is_tightened(dovecot, tmp_path):
    cfg = write_config(tmp_path, dovecot)
    open(cfg.state, "wb").close()
    os.chmod(cfg.state, 0o644)
    r = run_mailfeed(cfg.path, "status")
    assert r.returncode == 0, r.stderr
    assert os.stat(cfg.state).st_mode & 0o777 == 0o600
    assert "store.mode_tightened" in r.stderr


def test_keep_raw_keeps_recent_mail(dovecot, tmp_path):
    dovecot.create_folder("alice", "Team")
    dovecot.append("alice", "Team", mail("keep@example.org", "Kept for a week."))
    cfg = write_config(tmp_path, dovecot, folder="Team", after="keep")
    for _ in range(2):
        assert run_mailfeed(cfg.path, "run", "--once", timeout=90).returncode == 0
    assert rows(cfg, "SELECT COUNT(*) FROM message_bodies WHERE raw IS NOT NULL") == [(1,)]


def test_bidi_overrides_never_reach_the_feeds(dovecot, tmp_path):
    dovecot.create_folder("alice", "Team")
    rlo, pdi = "\u202e", "\u2069"
    dovecot.append("alice", "Team",
                   mail("bidi@example.org", "Open invoice%sfdp.exe%s now" % (rlo, pdi),
                        subject="=?utf-8?b?UGF5IOKArmZkcC5leGU=?="))
    cfg = write_config(tmp_path, dovecot, folder="Team", after="keep")
    assert run_mailfeed(cfg.path, "run", "--once", timeout=90).returncode == 0
    files = [f for f in os.listdir(cfg.feeds) if f.endswith((".atom", ".txt"))]
    assert len(files) == 2, files
    for f in files:
        text = open(os.path.join(cfg.feeds, f), encoding="utf-8").read()
        assert "invoicefdp.exe now" in text, text
        assert "Pay fdp.exe" in text, text
        assert rlo not in text and pdi not in text
