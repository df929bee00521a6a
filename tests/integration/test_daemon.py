"""The gateway end to end on the local feed: IMAP ingestion exactly once,
restarts, kill -9, UIDVALIDITY changes, connection errors, reload, status.

Real Dovecot on 127.0.0.1 (conftest's `dovecot` fixture); the daemon under
test is $MAILFEED_BIN (the sanitizer build in `make check`)."""
import hashlib
import json
import random
import signal
import sqlite3
import subprocess
import time

import pytest

from conftest import (MAILFEED, daemon_log, run_mailfeed, start_daemon, state_db, state_exists,
                      stop_daemon, wait_for, write_config)


def msg(i, subject=None, extra="", body=None, frm="carol@example.org"):
    subject = subject or "Message %d" % i
    body = body or "Body of message %d.\n" % i
    return ("From: Carol <%s>\r\nTo: team@example.org\r\nSubject: %s\r\n"
            "Message-ID: <m%d@example.org>\r\nDate: Mon, 23 Nov 2026 07:%02d:00 +0000\r\n"
            "%s\r\n%s" % (frm, subject, i, i % 60, extra, body)).encode()


def db(cfg):
    return state_db(cfg)


def count(cfg, sql, *args):
    if not state_exists(cfg.state):
        return 0
    con = db(cfg)
    try:
        return con.execute(sql, args).fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # the daemon has not created its schema yet
    finally:
        con.close()


def status(cfg):
    r = run_mailfeed(cfg.path, "status", "--json")
    assert r.returncode in (0, 1) and r.stdout, r.stderr  # 1: something is failing or dead
    return json.loads(r.stdout)


def test_once_posts_and_marks_seen(dovecot, tmp_path):
    dovecot.create_folder("alice", "Team")
    for i in range(3):
        dovecot.append("alice", "Team", msg(i))
    cfg = write_config(tmp_path, dovecot, folder="Team", after="seen")
    r = run_mailfeed(cfg.path, "run", "--once", timeout=60)
    assert r.returncode == 0, r.stderr
    assert count(cfg, "SELECT COUNT(*) FROM messages") == 3
    assert count(cfg, "SELECT COUNT(*) FROM local_items") == 3
    flags = [f for (_uid, f, _raw) in dovecot.messages("alice", "Team")]
    assert all("\\Seen" in f for f in flags), flags
    st = status(cfg)
    mb = st["mailboxes"][0]
    assert mb["name"] == "team" and mb["folder"] == "Team"
    assert mb["last_uid"] == 3 and mb["stored"] == 3 and mb["last_error"] is None
    assert mb["uidvalidity"] > 0 and mb["last_ok"]
    assert st["outbox"]["delivered"] == 3 and st["outbox"]["dead"] == 0


def test_restart_stores_nothing_twice(dovecot, tmp_path):
    dovecot.create_folder("alice", "Team")
    for i in range(5):
        dovecot.append("alice", "Team", msg(i))
    cfg = write_config(tmp_path, dovecot, folder="Team", after="keep")
    for _ in range(3):
        r = run_mailfeed(cfg.path, "run", "--once", timeout=60)
        assert r.returncode == 0, r.stderr
    assert count(cfg, "SELECT COUNT(*) FROM messages") == 5
    assert count(cfg, "SELECT COUNT(*) FROM local_items") == 5
    dovecot.append("alice", "Team", msg(5))
    r = run_mailfeed(cfg.path, "run", "--once", timeout=60)
    assert r.returncode == 0, r.stderr
    assert count(cfg, "SELECT COUNT(*) FROM messages") == 6
    assert count(cfg, "SELECT COUNT(*) FROM local_items") == 6


def test_message_appended_while_idling_is_stored_within_2s(dovecot, tmp_path):
    dovecot.create_folder("alice", "Team")
    cfg = write_config(tmp_path, dovecot, folder="Team")
    p = start_daemon(cfg.path)
    try:
        assert wait_for(lambda: status(cfg)["mailboxes"][0]["last_ok"], 20)
        time.sleep(0.5)  # let the watcher enter IDLE
        t0 = time.monotonic()
        dovecot.append("alice", "Team", msg(1))
        assert wait_for(lambda: count(cfg, "SELECT COUNT(*) FROM messages") == 1, 2.0)
        elapsed = time.monotonic() - t0
        assert elapsed < 2.0
        # and it flows on to the feed
        assert wait_for(lambda: count(cfg, "SELECT COUNT(*) FROM local_items") == 1, 10)
    finally:
        stop_daemon(p)


def test_kill9_during_initial_fetch_loses_and_repeats_nothing(dovecot, tmp_path):
    n = 2000
    dovecot.create_folder("alice", "Bulk")
    dovecot.bulk_import("alice", "Bulk", [msg(i, body="x" * 2000 + "\n") for i in range(n)])
    cfg = write_config(tmp_path, dovecot, folder="Bulk", after="keep")
    rng = random.Random(7)
    for _ in range(5):
        p = start_daemon(cfg.path)
        time.sleep(rng.uniform(0.3, 2.5))
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
    r = run_mailfeed(cfg.path, "run", "--once", timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    con = db(cfg)
    try:
        uids = [row[0] for row in con.execute("SELECT uid FROM messages")]
        assert sorted(uids) == list(range(1, n + 1))
        assert con.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == n
        assert con.execute("SELECT COUNT(*) FROM local_items").fetchone()[0] == n
        assert con.execute("SELECT COUNT(DISTINCT key) FROM local_items").fetchone()[0] == n
    finally:
        con.close()


def test_uidvalidity_change_takes_only_the_new_messages(dovecot, tmp_path):
    dovecot.create_folder("alice", "Team")
    for i in range(10):
        dovecot.append("alice", "Team", msg(i))
    cfg = write_config(tmp_path, dovecot, folder="Team", after="keep")
    assert run_mailfeed(cfg.path, "run", "--once", timeout=60).returncode == 0
    before = count(cfg, "SELECT MAX(uidvalidity) FROM messages")
    # the folder is recreated: same messages plus three new, new UIDVALIDITY
    dovecot.delete_folder("alice", "Team")
    dovecot.create_folder("alice", "Team")
    for i in range(13):
        dovecot.append("alice", "Team", msg(i))
    r = run_mailfeed(cfg.path, "run", "--once", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "uidvalidity_changed" in r.stderr
    assert count(cfg, "SELECT COUNT(*) FROM messages") == 13
    assert count(cfg, "SELECT COUNT(*) FROM local_items") == 13
    assert count(cfg, "SELECT MAX(uidvalidity) FROM messages") != before


@pytest.mark.parametrize("case", ["password", "unreachable", "untrusted", "hostname"])
def test_connection_errors_are_one_clear_line(dovecot, tmp_path, case):
    kw = {}
    if case == "password":
        kw["password"] = "wrong"
        expect = "login"
    elif case == "unreachable":
        kw["port"] = dovecot.free_port()
        expect = "connect"
    elif case == "untrusted":
        kw["ca_file"] = dovecot.other_ca_file
        expect = "certificate"
    else:
        kw["host"] = dovecot.mismatch_host
        expect = "host name"
    cfg = write_config(tmp_path, dovecot, folder="INBOX", **kw)
    r = run_mailfeed(cfg.path, "run", "--once", timeout=60)
    assert r.returncode == 1
    errors = [l for l in r.stderr.splitlines() if "imap.error" in l]
    assert errors, r.stderr
    assert "account alice" in errors[0] or "account=alice" in errors[0]
    assert expect in errors[0].lower()
    assert "AddressSanitizer" not in r.stderr
    if case == "password":
        return  # Dovecot slows repeated failed logins down; the others show the retries
    # the daemon keeps retrying with backoff instead of exiting
    p = start_daemon(cfg.path)
    assert wait_for(lambda: open(p.log_path).read().count("retry_in=") >= 2, 15)
    assert p.poll() is None
    log = stop_daemon(p)
    delays = [int(l.split("retry_in=")[1].rstrip("s")) for l in log.splitlines()
              if "retry_in=" in l]
    assert delays == sorted(delays), delays  # backing off, not hammering


def test_sigterm_exits_zero_quickly(dovecot, tmp_path):
    cfg = write_config(tmp_path, dovecot, folder="INBOX")
    p = start_daemon(cfg.path)
    assert wait_for(lambda: status(cfg)["mailboxes"][0]["last_ok"], 60), daemon_log(p)
    t0 = time.monotonic()
    stop_daemon(p)  # asserts exit 0 within 10 s
    assert time.monotonic() - t0 < 10


def test_reload_adds_and_removes_mappings_and_refuses_bad_config(dovecot, tmp_path):
    dovecot.create_folder("alice", "One")
    dovecot.create_folder("alice", "Two")
    cfg = write_config(tmp_path, dovecot, folder="One")
    p = start_daemon(cfg.path)
    try:
        dovecot.append("alice", "One", msg(1))
        assert wait_for(lambda: count(cfg, "SELECT COUNT(*) FROM local_items") == 1, 20)
        # add a second mapping
        with open(cfg.path, "a") as f:
            f.write("\n[mailbox two]\naccount = alice\nfolder = Two\ngroup = two\nafter = keep\nstart = all\n")
        p.send_signal(signal.SIGHUP)
        dovecot.append("alice", "Two", msg(2))
        assert wait_for(lambda: count(cfg, "SELECT COUNT(*) FROM local_items WHERE grp='two'") == 1, 20)
        # a broken config is refused and the old one keeps working
        good = open(cfg.path).read()
        with open(cfg.path, "a") as f:
            f.write("\n[nonsense\n")
        p.send_signal(signal.SIGHUP)
        assert wait_for(lambda: status(cfg)["reload_error"], 10)
        dovecot.append("alice", "Two", msg(3))
        assert wait_for(lambda: count(cfg, "SELECT COUNT(*) FROM local_items WHERE grp='two'") == 2, 20)
        # remove the first mapping: its new mail is no longer taken in
        import re
        with open(cfg.path, "w") as f:
            f.write(re.sub(r"\[mailbox team\][^\[]*", "", good))
        p.send_signal(signal.SIGHUP)
        # the second successful reload (the broken one was refused)
        assert wait_for(lambda: daemon_log(p).count("reload.done") == 2, 20), \
            daemon_log(p)[-3000:]
        dovecot.append("alice", "One", msg(4))
        time.sleep(3)
        assert count(cfg, "SELECT COUNT(*) FROM messages WHERE message_id='m4@example.org'") == 0
        assert p.poll() is None
    finally:
        stop_daemon(p)


def test_attach_original_keeps_the_whole_message(dovecot, tmp_path):
    dovecot.create_folder("alice", "Team")
    body = "Sounds good.\n\nOn Mon, 23 Nov 2026 at 07:01, Carol <c@example.org> wrote:\n> old\n"
    dovecot.append("alice", "Team", msg(1, body=body))
    cfg = write_config(tmp_path, dovecot, folder="Team", extra="attach_original = yes")
    assert run_mailfeed(cfg.path, "run", "--once").returncode == 0
    con = db(cfg)
    try:
        text, atts = con.execute("SELECT text, attachments FROM local_items").fetchone()
        removed = json.loads(con.execute("SELECT parsed FROM message_parsed").fetchone()[0])[
            "removed"]
    finally:
        con.close()
    assert text == "Sounds good."
    assert "> old" in removed  # the trimmed part is kept in the state
    files = json.loads(atts)
    assert [f["filename"] for f in files] == ["original.eml"]
    assert files[0]["content_type"] == "message/rfc822"
    # the whole message, body and quoted part included, not its header alone
    con = db(cfg)
    try:
        raw = bytes(con.execute("SELECT raw FROM message_bodies").fetchone()[0])
    finally:
        con.close()
    assert b"> old" in raw
    assert files[0]["size"] == len(raw)
    assert files[0]["sha256"] == hashlib.sha256(raw).hexdigest()


def test_messages_without_a_message_id_are_told_apart_by_their_whole_text(dovecot, tmp_path):
    # the same header block, no Message-ID: only the bodies differ
    dovecot.create_folder("alice", "Team")
    head = ("From: Carol <carol@example.org>\r\nTo: team@example.org\r\n"
            "Subject: Weekly note\r\nDate: Mon, 23 Nov 2026 07:00:00 +0000\r\n\r\n")
    for body in ("First week: the plan.\r\n", "Second week: the budget.\r\n"):
        dovecot.append("alice", "Team", (head + body).encode())
    cfg = write_config(tmp_path, dovecot, folder="Team")
    assert run_mailfeed(cfg.path, "run", "--once").returncode == 0
    con = db(cfg)
    try:
        texts = sorted(t for (t,) in con.execute("SELECT text FROM local_items"))
        notes = con.execute("SELECT reason FROM messages WHERE reason IS NOT NULL").fetchall()
    finally:
        con.close()
    assert texts == ["First week: the plan.", "Second week: the budget."]
    assert notes == []  # neither taken for a changed copy of the other
