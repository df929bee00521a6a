"""The state's own SQL on PostgreSQL.  Two processes writing the same rows
at once (read committed): a message taken in by one while another has the
same UID in an open transaction is stored once, without an error; the folder
checkpoint only moves forward, also when the other process moved it further
while this one waited.  Retention: finished mail loses its raw bytes, mail
on the dead list keeps them.  `check-config --online` reaches the state's
server and tells how far its schema is, changing nothing.  Real Dovecot, a
real PostgreSQL 15 (conftest's `postgres`); the other process is a psycopg2
connection."""
import os
import pwd
import socket
import time

import pytest

from conftest import Secret, run_mailfeed, start_daemon, write_config

psycopg2 = pytest.importorskip("psycopg2")


def mail(i):
    return ("From: Carol <carol@example.org>\r\nTo: team@example.org\r\n"
            "Subject: Note %d\r\nMessage-ID: <conc%d@example.org>\r\n"
            "Date: Mon, 23 Nov 2026 08:%02d:00 +0000\r\n\r\nText %d.\r\n"
            % (i, i, i, i)).encode()


def connect(dsn, autocommit):
    con = psycopg2.connect(dsn)
    con.autocommit = autocommit
    return con


def one(con, sql, *args):
    with con.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()


def waiting_on_a_lock(watch):
    return one(watch, "SELECT COUNT(*) FROM pg_stat_activity WHERE datname=current_database()"
                      " AND wait_event_type='Lock'")[0] > 0


def test_same_uid_stored_once_and_checkpoint_only_forward(dovecot, postgres, tmp_path):
    dovecot.create_folder("alice", "Team")
    for i in range(1, 4):
        dovecot.append("alice", "Team", mail(i))
    uidvalidity = dovecot.status("alice", "Team")["uidvalidity"]
    cfg = write_config(tmp_path, dovecot, folder="Team", after="keep",
                       gateway={"state": postgres.dsn})
    # the schema, and the folder's row, as the daemon makes them
    r = run_mailfeed(cfg, "status")
    assert r.returncode in (0, 1), r.stderr
    other = connect(postgres.dsn, autocommit=False)
    watch = connect(postgres.dsn, autocommit=True)
    try:
        with other.cursor() as cur:
            # the other process took UIDs 1-3 in and has not committed yet
            for uid in (1, 2, 3):
                cur.execute("INSERT INTO messages(mailbox, uidvalidity, uid, size, sha256,"
                            " received_at, state) VALUES('team', %s, %s, 1, 'other', 0,"
                            " 'skipped')", (uidvalidity, uid))
        p = start_daemon(cfg.path, "--once")
        deadline = time.monotonic() + 30
        while not waiting_on_a_lock(watch) and time.monotonic() < deadline:
            assert p.poll() is None, open(p.log_path).read()[-3000:]
            time.sleep(0.05)
        assert waiting_on_a_lock(watch), open(p.log_path).read()[-3000:]
        # ... and moved the checkpoint further before it commits
        with other.cursor() as cur:
            cur.execute("UPDATE folders SET last_uid=7 WHERE mailbox='team'")
        other.commit()
        assert p.wait(60) == 0, open(p.log_path).read()[-3000:]
    finally:
        other.close()
    log = open(p.log_path).read()
    assert "store.error" not in log and "ERROR: AddressSanitizer" not in log, log[-3000:]
    rows = [tuple(r) for r in postgres.sql(
        "SELECT uid, sha256 FROM messages WHERE mailbox='team' ORDER BY uid")]
    assert rows == [("1", "other"), ("2", "other"), ("3", "other")], rows
    assert one(watch, "SELECT last_uid FROM folders WHERE mailbox='team'")[0] == 7
    watch.close()


def test_retention_on_postgresql(dovecot, postgres, tmp_path):
    dovecot.create_folder("alice", "Team")
    dovecot.append("alice", "Team", mail(1))
    dovecot.append("alice", "Team", mail(2).replace(b"Subject: Note 2",
                                                    b"Auto-Submitted: auto-replied\r\n"
                                                    b"Subject: Note 2"))
    cfg = write_config(tmp_path, dovecot, folder="Team", after="keep",
                       gateway={"state": postgres.dsn, "keep_raw": "0s"})
    for _ in range(2):  # delivered, then erased on the next pass
        r = run_mailfeed(cfg, "run", "--once", timeout=120)
        assert r.returncode in (0, 1), r.stderr
        assert "store.error" not in r.stderr, r.stderr
    raw = {r[0]: r[1] for r in postgres.sql(
        "SELECT m.message_id, b.raw IS NOT NULL FROM messages m"
        " LEFT JOIN message_bodies b ON b.message=m.id")}
    # the auto-reply is skipped: on the dead list, with its mail
    assert raw == {"conc1@example.org": "f", "conc2@example.org": "t"}, raw




def test_check_config_online_reaches_the_state(postgres, tmp_path):
    cfg = write_config(tmp_path, None, gateway={"state": postgres.dsn}, mailbox=None)
    r = run_mailfeed(cfg, "check-config", "--online")
    assert r.returncode == 0, r.stdout + r.stderr
    line = [x for x in r.stdout.splitlines() if x.startswith("state (")]
    assert len(line) == 1 and ": ok, PostgreSQL 15" in line[0], r.stdout
    assert "empty (the daemon creates the schema)" in line[0], line
    assert postgres.server.password not in r.stdout and "***" in line[0], line
    # only looked: nothing was created
    assert postgres.sql("SELECT COUNT(*) FROM information_schema.tables"
                        " WHERE table_schema='public'") == [["0"]]
    assert run_mailfeed(cfg, "status").returncode == 0
    r = run_mailfeed(cfg, "check-config", "--online")
    assert r.returncode == 0 and "schema version " in r.stdout, r.stdout
    # a server that does not answer is a failed check
    down = write_config(tmp_path / "down", None, mailbox=None, gateway={
        "state": "postgresql://mailfeed:secretpw@127.0.0.1:%d/x" % free_port()})
    r = run_mailfeed(down, "check-config", "--online")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "state (postgresql://mailfeed:***@127.0.0.1:" in r.stdout, r.stdout
    assert ": FAILED: cannot connect to PostgreSQL" in r.stdout, r.stdout
    assert "secretpw" not in r.stdout + r.stderr


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



@pytest.mark.skipif(os.geteuid() != 0, reason="judging secrets for the service's user needs root")
def test_check_config_as_root_judges_secrets_for_the_owner_of_the_dsn_file(postgres, tmp_path):
    nobody = pwd.getpwnam("nobody")
    cfg = write_config(tmp_path, None, mailbox=None,
                       gateway={"state": None, "state_dsn_file": Secret(postgres.dsn + "\n")})
    dsn_file = [line.split("=", 1)[1].strip() for line in open(cfg.path).read().splitlines()
                if line.startswith("state_dsn_file")][0]
    os.chown(dsn_file, nobody.pw_uid, nobody.pw_gid)
    r = run_mailfeed(cfg, "check-config")
    assert "secrets judged for user nobody (owner of %s)" % dsn_file in r.stdout, \
        r.stdout + r.stderr
