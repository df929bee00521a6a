"""`mailfeed migrate-state`: a state made by the daemon on SQLite (posts,
comments, a dead entry, a subscriber, the daemon's notes) copied into a
fresh PostgreSQL database and back; `status` the same on both; the daemon
going on from PostgreSQL (new mail posted, old mail not again); a target
that is not empty and a source a daemon runs on are refused, touching
nothing.  Real Dovecot, a real PostgreSQL 15 (conftest's `postgres`)."""
import json
import os
import sqlite3

import pytest

from conftest import (Secret, run_mailfeed, start_daemon, stop_daemon, wait_for,
                      write_config)

# tables of running processes, and of schema versions: not copied
NOT_COPIED = {"instances", "leases", "work_queue", "schema_versions"}


def mail(i, subject, reply_to=None, body=None, extra=""):
    if reply_to is not None:
        extra += "In-Reply-To: <mig%d@example.org>\r\n" % reply_to
    body = body or "Text %d, with a word or two.\r\n" % i
    return ("From: Carol Example <carol@example.org>\r\nTo: team@example.org\r\n"
            "Subject: %s\r\nMessage-ID: <mig%d@example.org>\r\n%s"
            "Date: Mon, 23 Nov 2026 08:%02d:00 +0000\r\n\r\n%s"
            % (subject, i, extra, i % 60, body)).encode()


def sqlite_tables(path):
    con = sqlite3.connect(path)
    try:
        names = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
        out = {}
        for n in names:
            if n in NOT_COPIED:
                continue
            cols = [r[1] for r in con.execute("SELECT * FROM pragma_table_info(?)", (n,))]
            rows = con.execute('SELECT * FROM "%s"' % n).fetchall()
            out[n] = (cols, sorted(rows, key=repr))
        return out
    finally:
        con.close()


def status(cfg):
    r = run_mailfeed(cfg, "status", "--json")
    assert r.returncode in (0, 1) and r.stdout, r.stderr
    st = json.loads(r.stdout)
    for mb in st["mailboxes"]:
        mb.pop("lag_seconds", None)
    # what describes the state, not the processes
    return {k: st[k] for k in ("mailboxes", "outbox", "digests", "notices_waiting")
            if k in st}


def pg_config(tmp_path, dovecot, dsn, **kw):
    """The same mappings with the state in PostgreSQL (DSN in a private file)."""
    return write_config(tmp_path, dovecot, folder="Team", after="keep",
                        gateway={"state": None, "state_dsn_file": Secret(dsn + "\n"),
                                 "max_message_size": "20K"}, **kw)


def sqlite_config(tmp_path, dovecot, **kw):
    """A state in an SQLite file, whatever MAILFEED_TEST_ENGINE says."""
    state = str(tmp_path / "state.db")
    cfg = write_config(tmp_path, dovecot, folder="Team", after="keep",
                       gateway={"state": state, "max_message_size": "20K"}, **kw)
    cfg.state = state
    return cfg


def local_items(con_or_pg):
    if isinstance(con_or_pg, str):
        con = sqlite3.connect(con_or_pg)
        try:
            return sorted(r[0] for r in con.execute("SELECT key FROM local_items"))
        finally:
            con.close()
    return sorted(r[0] for r in con_or_pg.sql("SELECT key FROM local_items"))


@pytest.fixture
def made_state(dovecot, tmp_path):
    """The daemon's state after a run over posts, comments, an auto-reply,
    a message too large, a subscriber and a note."""
    dovecot.create_folder("alice", "Team")
    dovecot.append("alice", "Team", mail(1, "Budget"))
    dovecot.append("alice", "Team", mail(2, "Re: Budget", reply_to=1))
    dovecot.append("alice", "Team", mail(3, "Trip", body="Bytes \xe9t\xe9 ok.\r\n"))
    dovecot.append("alice", "Team", mail(4, "Re: Trip", reply_to=3))
    dovecot.append("alice", "Team", mail(5, "Out of Office: Budget",
                                        extra="Auto-Submitted: auto-replied\r\n"))
    dovecot.append("alice", "Team", mail(6, "Huge", body="x" * 30000 + "\r\n"))
    cfg = sqlite_config(tmp_path / "sqlite", dovecot)
    r = run_mailfeed(cfg, "subscribe", "bob@example.org", "--groups", "team", "--daily")
    assert r.returncode == 0, r.stderr
    p = start_daemon(cfg.path)
    try:
        assert wait_for(lambda: os.path.exists(cfg.state) and
                        len(local_items(cfg.state)) == 4, 30), open(p.log_path).read()[-3000:]
        assert wait_for(lambda: status(cfg)["mailboxes"][0]["last_uid"] == 6, 10)
    finally:
        stop_daemon(p)
    return cfg


def migrate(cfg, *args):
    return run_mailfeed(cfg, "migrate-state", *args, timeout=120)


def test_round_trip_and_the_daemon_goes_on(made_state, dovecot, postgres, tmp_path):
    cfg = made_state
    before = sqlite_tables(cfg.state)
    assert before["subscribers"][1] and before["daemon"][1]
    assert len(before["outbox"][1]) == 4
    dsn_file = tmp_path / "target.dsn"
    dsn_file.write_text(postgres.dsn + "\n")
    os.chmod(dsn_file, 0o600)

    r = migrate(cfg, "--to-dsn-file", str(dsn_file))
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(None, 1) for line in r.stdout.splitlines()[1:])
    for name, (_cols, rows) in before.items():
        assert int(lines[name].split()[0]) == len(rows), (name, r.stdout)
    total = sum(len(rows) for (_c, rows) in before.values())
    assert lines["total"].split()[0] == str(total), r.stdout
    assert postgres.server.password not in r.stdout + r.stderr
    # the same rows in PostgreSQL
    for name, (_cols, rows) in before.items():
        assert int(postgres.sql('SELECT COUNT(*) FROM "%s"' % name)[0][0]) == len(rows), name

    pcfg = pg_config(tmp_path / "pg", dovecot, postgres.dsn)
    assert status(pcfg) == status(cfg)

    # and back, into a new SQLite file: every row as it was
    back = str(tmp_path / "back" / "state.db")
    r = migrate(pcfg, "--to", back)
    assert r.returncode == 0, r.stderr
    after = sqlite_tables(back)
    for name, (cols, rows) in before.items():
        assert after[name][0] == cols, name
        assert after[name][1] == rows, name
    for name in set(after) - set(before):
        assert not after[name][1], name

    # the daemon goes on from PostgreSQL: new mail posted, old mail not again
    old = local_items(postgres)
    dovecot.append("alice", "Team", mail(7, "Party"))
    dovecot.append("alice", "Team", mail(8, "Re: Budget", reply_to=1))
    p = start_daemon(pcfg.path)
    try:
        assert wait_for(lambda: len(local_items(postgres)) == len(old) + 2, 30), \
            open(p.log_path).read()[-3000:]
    finally:
        stop_daemon(p)
    new = local_items(postgres)
    assert set(old) < set(new) and len(new) == len(set(new)) == len(old) + 2
    # a new id of every table goes past the copied ones
    ids = postgres.sql("SELECT id FROM outbox ORDER BY id")
    assert len(ids) == 6 and len({r[0] for r in ids}) == 6


def pg_counts(postgres):
    names = [r[0] for r in postgres.sql(
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema=current_schema() ORDER BY 1")]
    return {n: postgres.sql('SELECT COUNT(*) FROM "%s"' % n)[0][0] for n in names}


def test_a_target_that_is_not_empty_is_refused_untouched(made_state, postgres, tmp_path):
    cfg = made_state
    r = migrate(cfg, "--to", postgres.dsn)
    assert r.returncode == 0, r.stderr
    counts = pg_counts(postgres)
    r = migrate(cfg, "--to", postgres.dsn)
    assert r.returncode == 1
    assert "not empty" in r.stderr and "nothing was changed" in r.stderr, r.stderr
    assert pg_counts(postgres) == counts
    # an SQLite target too, byte for byte
    other = sqlite_config(tmp_path / "other", None, mailbox=None)
    r = run_mailfeed(other, "subscribe", "dan@example.org", "--groups", "team", "--daily")
    assert r.returncode == 0, r.stderr
    data = open(other.state, "rb").read()
    r = run_mailfeed(None, "migrate-state", "--from", postgres.dsn, "--to", other.state)
    assert r.returncode == 1 and "table subscribers has rows" in r.stderr, r.stderr
    assert open(other.state, "rb").read() == data


def test_a_source_a_daemon_runs_on_is_refused(made_state, postgres):
    cfg = made_state
    p = start_daemon(cfg.path)
    try:
        assert wait_for(lambda: "imap" in open(p.log_path).read(), 20)
        r = migrate(cfg, "--to", postgres.dsn)
        assert r.returncode == 1
        assert "source is in use" in r.stderr and "pid %d" % p.pid in r.stderr, r.stderr
        assert pg_counts(postgres) == {}
    finally:
        stop_daemon(p)


def test_usage_errors(tmp_path):
    cfg = sqlite_config(tmp_path, None, mailbox=None)
    r = run_mailfeed(cfg, "migrate-state")
    assert r.returncode == 2 and "--to" in r.stderr
    r = run_mailfeed(cfg, "migrate-state", "--to", cfg.state)
    assert r.returncode == 2 and "the same" in r.stderr
    r = run_mailfeed(cfg, "migrate-state", "--to", str(tmp_path / "new.db"))
    assert r.returncode == 1 and "no state database" in r.stderr


def test_a_postgresql_source_with_a_live_instance_is_refused(dovecot, postgres, tmp_path):
    dovecot.create_folder("alice", "Team")
    cfg = pg_config(tmp_path / "pg", dovecot, postgres.dsn)
    p = start_daemon(cfg.path)
    try:
        assert wait_for(lambda: "imap.connected" in open(p.log_path).read(), 30), \
            open(p.log_path).read()[-3000:]
        target = str(tmp_path / "copy" / "state.db")
        r = migrate(cfg, "--to", target)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "is running on" in r.stderr and "pid %d" % p.pid in r.stderr, r.stderr
        assert postgres.server.password not in r.stderr
        assert not os.path.exists(target)
    finally:
        stop_daemon(p)
    # stopped: the instance is gone, the copy goes through
    r = migrate(cfg, "--to", target)
    assert r.returncode == 0, r.stderr


def test_postgresql_to_postgresql(made_state, postgres, tmp_path):
    cfg = made_state
    r = migrate(cfg, "--to", postgres.dsn)
    assert r.returncode == 0, r.stderr
    second = postgres.server.create_database(postgres.name + "_b")
    r = run_mailfeed(None, "migrate-state", "--from", postgres.dsn, "--to", second)
    assert r.returncode == 0, r.stderr
    copied = {n: c for n, c in pg_counts(postgres).items() if n not in NOT_COPIED}
    name = second.rsplit("/", 1)[1]
    for table, n in copied.items():
        assert postgres.server.sql('SELECT COUNT(*) FROM "%s"' % table, name)[0][0] == n, table
    # rows as they were, blobs byte for byte
    q = "SELECT message, encode(raw, 'hex') FROM message_bodies ORDER BY message"
    assert postgres.server.sql(q, name) == postgres.sql(q)
