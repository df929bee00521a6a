"""The daemon working through a long backlog: the first posts reach the feed
while the rest is still being parsed, not only once the whole backlog is;
every message still becomes exactly one item.

Real Dovecot on 127.0.0.1 (conftest's `dovecot` fixture); the daemon under
test is $MAILFEED_BIN."""
import sqlite3

from conftest import (daemon_log, start_daemon, state_connect, state_exists, stop_daemon,
                      wait_for, write_config)

N = 700


def msg(i):
    return ("From: Carol <carol@example.org>\r\nTo: team@example.org\r\n"
            "Subject: Backlog item %d\r\nMessage-ID: <backlog%d@example.org>\r\n"
            "Date: Mon, 23 Nov 2026 07:%02d:00 +0000\r\n\r\nBody of item %d.\r\n"
            % (i, i, i % 60, i)).encode()


def count(cfg, sql):
    if not state_exists(cfg.state):
        return 0
    con = state_connect(cfg.state)
    try:
        return con.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # no schema yet
    finally:
        con.close()


def test_backlog_delivers_while_it_is_parsed(dovecot, tmp_path):
    dovecot.create_folder("alice", "Backlog")
    dovecot.bulk_import("alice", "Backlog", [msg(i) for i in range(N)])
    cfg = write_config(tmp_path, dovecot, folder="Backlog", after=None)
    p = start_daemon(cfg.path)
    try:
        assert wait_for(lambda: count(cfg, "SELECT COUNT(*) FROM local_items") == N, 240)
    finally:
        stop_daemon(p)
    lines = daemon_log(p).splitlines()
    queued = [i for i, line in enumerate(lines) if "message.queued" in line]
    delivered = [i for i, line in enumerate(lines) if "outbox.delivered" in line]
    assert len(queued) == N and len(delivered) == N
    # the first posts went out before the last message of the backlog was queued
    assert delivered[0] < queued[-1]
    assert count(cfg, "SELECT COUNT(DISTINCT key) FROM local_items") == N
