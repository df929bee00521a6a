"""Faults an admin meets in production, through the real binary: the IMAP
server restarted while the daemon idles and while it fetches, the feed
service down for a while, the SMTP relay refusing before it accepts, the
disk of the state database full, a damaged state database, and poison
messages in a mapped folder.  Each test checks what the admin sees (exit
code, the log line, `status`, `dead list`) and that in the end every
message arrived exactly once.

Real Dovecot on loopback (conftest's `dovecot`), the webhook receiver
double, the SMTP sink; the disk-full test mounts a small tmpfs (root)."""
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (MAILFEED, run_mailfeed, start_daemon, state_db, stop_daemon, daemon_log,
                      wait_for, write_config)

HERE = os.path.dirname(os.path.abspath(__file__))
WEBHOOK_DOUBLE = os.path.join(HERE, "doubles", "webhook_double.py")


# ------------------------------------------------------------------ helpers

def msg(i, subject=None, body=None, extra="", date_min=None):
    subject = subject or "Message %d" % i
    body = body or "Body of message %d.\n" % i
    minute = i % 60 if date_min is None else date_min
    return ("From: Carol <carol@example.org>\r\nTo: team@example.org\r\n"
            "Subject: %s\r\nMessage-ID: <m%d@example.org>\r\n"
            "Date: Mon, 23 Nov 2026 07:%02d:00 +0000\r\n%s\r\n%s"
            % (subject, i, minute, extra, body)).encode()


def is_dsn(state):
    return state.startswith(("postgresql://", "postgres://"))


def query(cfg, sql, *args):
    """Rows of a query on the state (SQLite or PostgreSQL), [] while the
    daemon has not created it."""
    if not is_dsn(cfg.state) and not os.path.exists(cfg.state):
        return []
    try:
        con = state_db(cfg) if is_dsn(cfg.state) else sqlite3.connect(cfg.state, timeout=30)
    except Exception:
        return []
    try:
        return [tuple(r) for r in con.execute(sql, args).fetchall()]
    except Exception:
        return []  # the schema is not there yet
    finally:
        con.close()


def count(cfg, sql, *args):
    rows = query(cfg, sql, *args)
    return rows[0][0] if rows else 0


def status(cfg):
    r = run_mailfeed(cfg.path, "status", "--json")
    assert r.returncode in (0, 1) and r.stdout, r.stderr  # 1: something is failing or dead
    return json.loads(r.stdout)


def no_sanitizer_report(text):
    assert "AddressSanitizer" not in text and "runtime error" not in text, text[-3000:]


def error_lines(stderr):
    return [l for l in stderr.splitlines() if l.strip()]


def exactly_once(cfg, n):
    """n messages, each delivered once: one outbox item and one feed item
    per message, no key twice."""
    assert count(cfg, "SELECT COUNT(*) FROM messages") == n
    assert count(cfg, "SELECT COUNT(DISTINCT message_id) FROM messages") == n
    assert count(cfg, "SELECT COUNT(*) FROM outbox WHERE state='delivered'") == n
    assert count(cfg, "SELECT COUNT(*) FROM local_items") == n
    assert count(cfg, "SELECT COUNT(DISTINCT key) FROM local_items") == n


def seen_count(dovecot, folder):
    return sum(1 for _uid, flags, _raw in dovecot.messages("alice", folder)
               if "\\Seen" in flags)


def outage(dovecot, seconds):
    """Dovecot stopped (every process: open sessions drop, connections are
    refused) for a while, then started again on the same ports."""
    dovecot._kill()
    time.sleep(seconds)
    assert dovecot._start(), "Dovecot could not get its ports back"


def log_count(p, needle):
    return daemon_log(p).count(needle)


# ------------------------------------------------------- IMAP server faults

def test_imap_restart_while_idling(dovecot, tmp_path):
    dovecot.create_folder("alice", "Team")
    cfg = write_config(tmp_path, dovecot, folder="Team", after="seen")
    p = start_daemon(cfg.path)
    try:
        assert wait_for(lambda: "idle=yes" in daemon_log(p), 20), daemon_log(p)
        assert wait_for(lambda: status(cfg)["mailboxes"][0]["last_ok"], 20)
        dovecot.append("alice", "Team", msg(1))
        assert wait_for(lambda: count(cfg, "SELECT COUNT(*) FROM local_items") == 1, 20)
        time.sleep(0.5)  # back in IDLE
        outage(dovecot, 1.5)
        # the daemon saw the session drop and came back by itself
        assert wait_for(lambda: log_count(p, "imap.connected") >= 2, 20), daemon_log(p)
        assert re.search(r"imap\.disconnected mailbox=team error=\"[^\"]*IDLE[^\"]*\" "
                         r"retry_in=\d+s", daemon_log(p)), daemon_log(p)
        for i in (2, 3):
            dovecot.append("alice", "Team", msg(i))
        assert wait_for(lambda: count(cfg, "SELECT COUNT(*) FROM local_items") == 3, 20), \
            daemon_log(p)[-3000:]
        assert wait_for(lambda: seen_count(dovecot, "Team") == 3, 20)
        assert p.poll() is None
        time.sleep(1)  # nothing more arrives
        exactly_once(cfg, 3)
        mb = status(cfg)["mailboxes"][0]
        assert mb["last_uid"] == 3 and mb["waiting"] == 0
    finally:
        log = stop_daemon(p)
    # while the server was down, each failed attempt said when the next comes
    for line in log.splitlines():
        if "imap.error" in line:
            assert "retry_in=" in line, line


def test_imap_server_stopped_during_initial_fetch(dovecot, tmp_path):
    n = 1500
    dovecot.bulk_import("alice", "Bulk", [msg(i, body="x" * 3000 + "\n") for i in range(n)])
    cfg = write_config(tmp_path, dovecot, folder="Bulk", after="keep")
    p = start_daemon(cfg.path)
    try:
        stored = lambda: count(cfg, "SELECT COUNT(*) FROM messages")
        assert wait_for(lambda: stored() > 0, 60, step=0.02), daemon_log(p)
        at_stop = stored()
        outage(dovecot, 2)
        assert at_stop < n, "the fetch ended before the server was stopped"
        assert wait_for(lambda: count(cfg, "SELECT COUNT(*) FROM local_items") == n, 180), \
            daemon_log(p)[-3000:]
        log = daemon_log(p)
        assert re.search(r"imap\.disconnected mailbox=team error=\"[^\"]*UID FETCH", log), log
        assert log.count("imap.connected") >= 2
        assert p.poll() is None
    finally:
        stop_daemon(p)
    uids = [u for (u,) in query(cfg, "SELECT uid FROM messages ORDER BY uid")]
    assert uids == list(range(1, n + 1))
    exactly_once(cfg, n)


# ------------------------------------------------------ feed service outage

class Receiver:
    """The webhook receiver double as a process that can be stopped and
    started again on the same port."""

    def __init__(self, tmp, secret):
        self.log = os.path.join(tmp, "requests.jsonl")
        self.secret = secret
        self.port = 0
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            [sys.executable, WEBHOOK_DOUBLE, "--secret", self.secret, "--log", self.log,
             "--port", str(self.port)], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("PORT "), line
        self.port = int(line.split()[1])

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc.stdout.close()
            self.proc = None

    def requests(self):
        if not os.path.exists(self.log):
            return []
        with open(self.log, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]


@pytest.fixture
def receiver(tmp_path):
    secret = tmp_path / "hook.secret"
    secret.write_bytes(os.urandom(32))
    secret.chmod(0o600)
    rx = Receiver(str(tmp_path), str(secret))
    yield rx
    rx.stop()


def test_feed_service_down_then_back(dovecot, tmp_path, receiver):
    dovecot.create_folder("alice", "Team")
    cfg = write_config(tmp_path, dovecot, folder="Team", after="seen",
                       feed={"backend": "webhook",
                             "url": "http://127.0.0.1:%d/hook" % receiver.port,
                             "secret_file": receiver.secret, "timeout": "5s",
                             "max_retry_delay": "2s"})
    receiver.stop()  # the service is down: connections are refused
    p = start_daemon(cfg.path)
    try:
        dovecot.append("alice", "Team", msg(1, subject="Budget", date_min=1))
        assert wait_for(lambda: status(cfg)["outbox"]["retrying"] == 1, 30), daemon_log(p)
        down_since = time.monotonic()
        # replies arrive meanwhile; they wait behind their post
        dovecot.append("alice", "Team", msg(2, subject="Re: Budget", date_min=2,
                                            extra="In-Reply-To: <m1@example.org>\r\n",
                                            body="Agreed.\n"))
        dovecot.append("alice", "Team", msg(3, subject="Re: Budget", date_min=3,
                                            extra="In-Reply-To: <m2@example.org>\r\n"
                                                  "References: <m1@example.org> "
                                                  "<m2@example.org>\r\n",
                                            body="Me too.\n"))
        assert wait_for(lambda: status(cfg)["outbox"]["pending"] == 2, 30), daemon_log(p)
        # what the admin sees during the outage
        st = status(cfg)
        assert st["outbox"]["retrying"] == 1 and st["outbox"]["delivered"] == 0
        assert st["outbox"]["dead"] == 0
        assert "webhook unreachable" in st["outbox"]["retry_error"], st["outbox"]
        assert st["outbox"]["next_retry"]
        text = run_mailfeed(cfg.path, "status").stdout
        assert "1 retrying" in text and "retrying: webhook unreachable" in text, text
        # nothing is acknowledged on the server before it is delivered
        assert seen_count(dovecot, "Team") == 0
        # the outage lasts; the daemon keeps trying, capped at max_retry_delay
        while time.monotonic() - down_since < 10:
            assert p.poll() is None
            time.sleep(0.5)
        assert log_count(p, "outbox.retrying") >= 3, daemon_log(p)
        receiver.start()  # back, on the same port
        assert wait_for(lambda: status(cfg)["outbox"]["delivered"] == 3, 20), \
            daemon_log(p)[-3000:]
        assert wait_for(lambda: seen_count(dovecot, "Team") == 3, 20)
        assert p.poll() is None
    finally:
        stop_daemon(p)
    reqs = receiver.requests()
    # exactly once, in thread order: the post, then its comments by date
    assert [r["status"] for r in reqs] == [200, 200, 200], reqs
    bodies = [r["body"] for r in reqs]
    assert [b["type"] for b in bodies] == ["post", "comment", "comment"]
    assert [b["message_id"] for b in bodies] == ["m1@example.org", "m2@example.org",
                                                 "m3@example.org"]
    assert len({r["delivery"] for r in reqs}) == 3
    assert bodies[1]["parent"] == bodies[2]["parent"] == "wh-1"
    assert all(r["signature_ok"] for r in reqs)
    st = status(cfg)
    assert st["outbox"]["retrying"] == 0 and st["outbox"]["retry_error"] is None


# --------------------------------------------------------------- SMTP relay

def test_smtp_refusing_then_accepting(tmp_path, smtp_sink, tls_ca):
    cfg = write_config(tmp_path, None,
                       smtp={"url": "smtp://127.0.0.1:%d" % smtp_sink.port,
                             "from": "Feed digest <digest@example.org>",
                             "ca_file": tls_ca.ca_file},
                       digest={"hour": 7, "timezone": "UTC"},
                       **{"subscriber bob@example.org": {"groups": "team",
                                                         "frequency": "daily"}})
    r = run_mailfeed(cfg.path, "digest")  # creates the state, seeds bob
    assert r.returncode == 0, r.stderr
    con = state_db(cfg)
    # subscribed long ago with hour 0: a digest is due now
    con.execute("UPDATE subscribers SET hour=0, since=0, last_sent=NULL")
    con.execute("INSERT INTO local_items(key, grp, author_name, author_email, subject, text,"
                " created) VALUES('k1', 'team', 'Ann', 'ann@example.org', 'Budget',"
                " 'The budget is ready.', ?)", (int(time.time()) - 60,))
    con.commit()
    con.close()

    smtp_sink.fail("MAIL", "421 4.3.2 service shutting down", times=1)
    smtp_sink.fail("DATA", "451 4.3.0 try again later", times=1)
    for expect in ("421", "451"):
        r = run_mailfeed(cfg.path, "digest")
        assert r.returncode == 1, r.stderr
        lines = [l for l in r.stderr.splitlines() if "digest.not_sent" in l]
        assert len(lines) == 1 and "temporary" in lines[0] and expect in lines[0], r.stderr
        no_sanitizer_report(r.stderr)
        assert smtp_sink.messages() == []
        # nothing recorded as sent: the next run tries again
        assert count(cfg, "SELECT COUNT(*) FROM digest_runs WHERE state='sent'") == 0
        assert status(cfg)["digests"][0]["last_sent"] is None

    r = run_mailfeed(cfg.path, "digest")
    assert r.returncode == 0, r.stderr
    msgs = smtp_sink.messages()
    assert len(msgs) == 1
    env, m, _raw = msgs[0]
    assert "The budget is ready." in m.get_body(("plain",)).get_content()
    assert status(cfg)["digests"][0]["last_sent"]
    # sent once: later runs send nothing more for this period
    r = run_mailfeed(cfg.path, "digest")
    assert r.returncode == 0, r.stderr
    assert len(smtp_sink.messages()) == 1


# ------------------------------------------------- state database disk full

@pytest.fixture
def small_fs(tmp_path):
    """A 16 MB tmpfs for the state database."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system for the disk-full test needs root")
    mnt = tmp_path / "statefs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: " + r.stderr.strip())
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(mnt):
    """Fills the file system; returns the filler's path."""
    filler = mnt / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        pass
    try:
        while True:
            os.write(fd, b"\0" * 512)
    except OSError:
        pass
    os.close(fd)
    return filler


def integrity(cfg, where):
    """PRAGMA integrity_check of a copy of the state (a full disk leaves no
    room for SQLite's own index files next to the original)."""
    where.mkdir(exist_ok=True)
    for f in os.listdir(os.path.dirname(cfg.state)):
        if f.startswith("state.db"):
            shutil.copy(os.path.join(os.path.dirname(cfg.state), f), where / f)
    con = sqlite3.connect(where / "state.db")
    try:
        return con.execute("PRAGMA integrity_check").fetchall()
    finally:
        con.close()


def test_state_disk_full(dovecot, tmp_path, small_fs):
    n = 20
    dovecot.create_folder("alice", "Team")
    for i in range(3):
        dovecot.append("alice", "Team", msg(i))
    state = str(small_fs / "state.db")
    cfg = write_config(tmp_path, dovecot, folder="Team", after="seen",
                       gateway={"state": state}, mailbox={"attach_original": "yes"})
    cfg.state = state
    r = run_mailfeed(cfg.path, "run", "--once")
    assert r.returncode == 0, r.stderr
    dovecot.bulk_import("alice", "Team", [msg(i, body="y" * 20000 + "\n")
                                          for i in range(3, 3 + n)])
    filler = fill(small_fs)

    # 1. no room at all: every command says so in one line and stops
    for args in (["run", "--once"], ["status"]):
        r = run_mailfeed(cfg.path, *args)
        assert r.returncode == 1, (args, r.stderr)
        no_sanitizer_report(r.stderr)
        lines = error_lines(r.stderr)
        assert len(lines) == 1, r.stderr
        assert "disk full" in lines[0] and state in lines[0] and "free some space" in lines[0]
    assert integrity(cfg, tmp_path / "copy1") == [("ok",)]
    assert seen_count(dovecot, "Team") == 3

    # 2. room to fetch (about 400 KB), not to convert as well (that needs
    # the text, the attached original and the feed item): the daemon says
    # why, keeps running without spinning, marks nothing delivered and
    # acknowledges nothing on the server
    with open(filler, "r+b") as f:
        f.truncate(os.path.getsize(filler) - 1024 * 1024)
    p = start_daemon(cfg.path)
    try:
        assert wait_for(lambda: "disk full: no space left for the state database %s" % state
                        in daemon_log(p), 30), daemon_log(p)[-3000:]
        assert wait_for(lambda: count(cfg, "SELECT COUNT(*) FROM messages") == 3 + n, 10), \
            "the messages were expected to be fetched before the disk ran full"
        time.sleep(1)
        assert p.poll() is None
        mb = status(cfg)["mailboxes"][0]
        assert mb["stored"] == 3 + n and mb["waiting"] == n
        assert count(cfg, "SELECT COUNT(*) FROM local_items") == 3
        assert count(cfg, "SELECT COUNT(*) FROM outbox WHERE state='delivered'") == 3
        assert seen_count(dovecot, "Team") == 3
        assert integrity(cfg, tmp_path / "copy2") == [("ok",)]

        # 3. space is back: everything arrives, once
        os.unlink(filler)
        assert wait_for(lambda: count(cfg, "SELECT COUNT(*) FROM local_items") == 3 + n, 40), \
            daemon_log(p)[-3000:]
        assert wait_for(lambda: seen_count(dovecot, "Team") == 3 + n, 20)
    finally:
        log = stop_daemon(p)
    assert "run.store_failed retry_in=" in log
    # the watchers do not blame the IMAP server for the full disk
    assert "imap.disconnected" not in log, log[-3000:]
    # retried with backoff, not in a loop flooding the log
    assert log.count("store.error") < 50, log[-3000:]
    exactly_once(cfg, 3 + n)
    assert integrity(cfg, tmp_path / "copy3") == [("ok",)]
    r = run_mailfeed(cfg.path, "run", "--once")
    assert r.returncode == 0, r.stderr
    exactly_once(cfg, 3 + n)


# ------------------------------------------------------ corrupt state file

def make_state(tmp_path):
    # damage to a state file: SQLite whatever the engine of the run
    state = str(tmp_path / "state.db")
    cfg = write_config(tmp_path, None, gateway={"state": state})
    cfg.state = state
    r = run_mailfeed(cfg.path, "status")
    assert r.returncode == 0, r.stderr
    con = sqlite3.connect(cfg.state)
    for i in range(300):
        con.execute("INSERT INTO local_items(key, grp, text, created) VALUES(?, 'g', ?, 0)",
                    ("k%d" % i, "text %d " % i * 400))
    con.commit()
    con.close()
    return cfg


def damage(path, how):
    data = bytearray(Path(path).read_bytes())
    if how == "header":
        data[0:100] = b"\xde\xad\xbe\xef" * 25
    elif how == "truncated":
        del data[len(data) // 2:]
    elif how == "page":
        page = len(data) // 4096 // 2
        data[page * 4096:(page + 1) * 4096] = b"\x55" * 4096
    elif how == "foreign":
        os.unlink(path)
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE invoices(id INTEGER PRIMARY KEY, total REAL)")
        con.execute("INSERT INTO invoices(total) VALUES(12.5)")
        con.commit()
        con.close()
        return Path(path).read_bytes()
    Path(path).write_bytes(bytes(data))
    return bytes(data)


@pytest.mark.parametrize("how", ["header", "truncated", "page", "foreign"])
def test_corrupt_state_is_refused_and_kept(tmp_path, how):
    cfg = make_state(tmp_path)
    for f in ("-wal", "-shm"):
        assert not os.path.exists(cfg.state + f)
    before = damage(cfg.state, how)
    for args in (["run", "--once"], ["run"], ["status"], ["status", "--json"], ["dead"]):
        r = run_mailfeed(cfg.path, *args, timeout=30)
        assert r.returncode == 1, (args, r.returncode, r.stderr)
        no_sanitizer_report(r.stderr)
        lines = error_lines(r.stderr)
        assert len(lines) == 1, (args, r.stderr)
        line = lines[0]
        assert cfg.state in line, line
        if how == "foreign":
            assert "not a mailfeed state database" in line, line
            assert "point [gateway] state at a file of its own" in line, line
        else:
            assert "corrupt" in line, line
            assert "restore it from a backup, or move it away" in line, line
        assert r.stdout == "", r.stdout
        # the file is left as it was for the admin to save or inspect
        assert Path(cfg.state).read_bytes() == before
    # moved away, a fresh state is created
    os.rename(cfg.state, cfg.state + ".broken")
    r = run_mailfeed(cfg.path, "status")
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------ poison mail

# libetpan 1.9.4 overflows its heap on this boundary (the parse worker dies)
# once crashed libetpan's MIME parser (a quoted boundary of one escaped
# quote); GMime reads it: it is posted like any other message.  A parser
# crash is quarantined as poison (tests/unit/test_worker.c,
# tests/integration/test_sandbox.py).
CRASH = ("From: Mallory <mallory@example.org>\r\nTo: team@example.org\r\n"
         "Subject: boom\r\nMessage-ID: <crash@example.org>\r\n"
         "Date: Mon, 23 Nov 2026 07:02:00 +0000\r\n"
         "Content-Type: multipart/mixed; boundary=\"\\\"\"\r\n\r\nx\r\n").encode()


def nested(levels):
    """More multipart levels than the parser accepts."""
    head = ("From: Mallory <mallory@example.org>\r\nTo: team@example.org\r\n"
            "Subject: deep\r\nMessage-ID: <deep@example.org>\r\n"
            "Date: Mon, 23 Nov 2026 07:03:00 +0000\r\n"
            "Content-Type: multipart/mixed; boundary=b0\r\n\r\n")
    parts = "".join("--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i - 1, i)
                    for i in range(1, levels))
    return (head + parts).encode()


def sanitizer_reports(log):
    return re.findall(r"==(\d+)==ERROR: (\w+Sanitizer): ([\w-]+)", log)


def test_poison_messages_are_quarantined_and_the_folder_moves_on(dovecot, tmp_path):
    dovecot.create_folder("alice", "Team")
    big = msg(4, subject="huge", body=("z" * 76 + "\r\n") * 3000, date_min=4)  # ~234 KB
    for raw in (msg(1, subject="Before", date_min=1), CRASH, nested(1200), big,
                msg(5, subject="After", date_min=5)):
        dovecot.append("alice", "Team", raw)
    cfg = write_config(tmp_path, dovecot, folder="Team", after="seen",
                       gateway={"max_message_size": "200K", "parse_timeout": "10s"})
    p = start_daemon(cfg.path)
    try:
        assert wait_for(lambda: count(cfg, "SELECT COUNT(*) FROM local_items") == 3, 60), \
            daemon_log(p)[-3000:]
        assert wait_for(lambda: seen_count(dovecot, "Team") == 5, 20)
        assert p.poll() is None
        texts = [t for (t,) in query(cfg, "SELECT subject FROM local_items ORDER BY id")]
        assert texts == ["Before", "boom", "After"]
        r = run_mailfeed(cfg.path, "dead", "--json")
        assert r.returncode == 0, r.stderr
        # each is listed with where it is, what it is, and why
        dead = {d["uid"]: d for d in json.loads(r.stdout)["dead"]}
        assert sorted(dead) == [3, 4], dead
        assert all(d["mailbox"] == "team" for d in dead.values())
        deep, huge = dead[3], dead[4]
        assert deep["state"] == "dead" and "unparseable" in deep["reason"]
        assert deep["subject"] == "deep" and deep["from"] == "mallory@example.org"
        assert huge["state"] == "skipped" and "too large" in huge["reason"]
        assert "max_message_size" in huge["reason"]  # not fetched whole
        text = run_mailfeed(cfg.path, "dead", "list").stdout
        assert "unparseable" in text and "too large" in text
        assert "mailbox: team uid 3" in text and "subject: deep" in text
        st = status(cfg)["mailboxes"][0]
        assert st["last_error"] is None and st["waiting"] == 0
        # the daemon goes on taking mail after the poison
        dovecot.append("alice", "Team", msg(6, subject="Later", date_min=6))
        assert wait_for(lambda: count(cfg, "SELECT COUNT(*) FROM local_items") == 4, 20)
        log = daemon_log(p)
        assert "message.quarantined" in log
    finally:
        p.send_signal(signal.SIGTERM)
        rc = p.wait(10)
    log = daemon_log(p)
    assert rc == 0, log[-3000:]
    # no sanitizer report, neither from the daemon nor from the worker
    assert not sanitizer_reports(log), log[-3000:]
    assert "runtime error" not in log


def test_messages_of_a_removed_mapping_do_not_block_the_others(dovecot, tmp_path):
    """Messages stored for a mapping that is no longer in the config wait
    for it to come back; however many there are, the mappings still in
    place go on."""
    cfg = write_config(tmp_path, dovecot, folder="INBOX", after="keep")
    r = run_mailfeed(cfg, "run", "--once")
    assert r.returncode == 0, r.stderr
    # 300 messages stored by an earlier config's mapping "gone", never processed
    con = state_db(cfg)
    for i in range(300):
        raw = msg(1000 + i)
        row = con.execute("INSERT INTO messages(mailbox, uidvalidity, uid, message_id, size,"
                          " internaldate, sha256, state, received_at)"
                          " VALUES('gone', 1, ?, ?, ?, 0, ?, 'new', 0) RETURNING id",
                          (i + 1, "<m%d@example.org>" % (1000 + i), len(raw),
                           "%064x" % i)).fetchone()
        con.execute("INSERT INTO message_bodies(message, raw) VALUES(?, ?)", (row[0], raw))
    con.commit()
    con.close()
    for i in range(3):
        dovecot.append("alice", "INBOX", msg(i))
    r = run_mailfeed(cfg, "run", "--once")
    assert r.returncode == 0, r.stderr
    assert count(cfg, "SELECT COUNT(*) FROM outbox WHERE state='delivered'") == 3
    assert count(cfg, "SELECT COUNT(DISTINCT key) FROM local_items") == 3
    assert count(cfg, "SELECT COUNT(*) FROM messages WHERE mailbox='gone' AND state='new'") == 300
