"""Many folders on one account: the daemon serves all of them over at most
`max_connections` IMAP sessions (one IDLE each, STATUS looks at the other
folders at least every `poll_interval`), against a Dovecot that keeps its
default limit of 10 connections per user and address.  New mail in any
folder is posted within poll_interval; memory stays small."""
import json
import os
import random
import re
import sqlite3
import subprocess
import time

import pytest

from conftest import (ASAN_OPTIONS, MAILFEED, daemon_log, run_mailfeed, start_daemon,
                      stop_daemon, wait_for, write_config)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELEASE = os.path.join(ROOT, "mailfeed")
FOLDERS = 100
POLL = 2


def msg(i):
    return ("From: Carol <carol@example.org>\r\nTo: team@example.org\r\n"
            "Subject: Folder news %d\r\nMessage-ID: <scale%d@example.org>\r\n"
            "Date: Mon, 23 Nov 2026 07:00:00 +0000\r\n\r\nNews for folder %d.\r\n"
            % (i, i, i)).encode()


def posted_groups(cfg):
    if not os.path.exists(cfg.state):
        return set()
    con = sqlite3.connect(cfg.state)
    try:
        return {r[0] for r in con.execute("SELECT grp FROM local_items")}
    except sqlite3.OperationalError:
        return set()
    finally:
        con.close()


def imap_connections(pid, port):
    """Established TCP connections of pid to the IMAP port."""
    r = subprocess.run(["ss", "-Htnp", "state", "established", "( dport = :%d )" % port],
                       capture_output=True, text=True)
    return sum(1 for line in r.stdout.splitlines() if "pid=%d," % pid in line)


def vm_hwm_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        m = re.search(r"^VmHWM:\s+(\d+) kB", f.read(), re.M)
    return int(m.group(1))


@pytest.fixture
def default_limit_dovecot(dovecot_factory):
    # the harness raises the limit for the other tests; here it is
    # Dovecot's own default again
    d = dovecot_factory(extra="mail_max_userip_connections = 10\n")
    out = subprocess.run(["doveconf", "-c", d.conf, "-h", "mail_max_userip_connections"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "10"
    for i in range(FOLDERS):
        d.create_folder("alice", "F%03d" % i)
    return d


def scale_config(tmp_path, dovecot):
    boxes = {"mailbox f%03d" % i: {"account": "alice", "folder": "F%03d" % i,
                                   "group": "g%03d" % i, "after": "seen", "start": "all"}
             for i in range(FOLDERS)}
    return write_config(tmp_path, dovecot, mailbox=None,
                        account={"poll_interval": "%ds" % POLL}, **boxes)


def run_scale(tmp_path, dovecot, binary):
    """Starts binary on 100 folders, appends one message to 10 random
    folders while it runs; returns (daemon, cfg, max connections seen,
    seconds until all were posted)."""
    cfg = scale_config(tmp_path, dovecot)
    log_path = os.path.join(cfg.dir, "daemon-scale.log")
    with open(log_path, "wb") as log:
        p = subprocess.Popen([binary, "-c", cfg.path, "run"], stdout=subprocess.DEVNULL,
                             stderr=log, env=dict(os.environ, ASAN_OPTIONS=ASAN_OPTIONS))
    p.log_path = log_path
    most = 0
    try:
        # every folder looked at once (its status row says so)
        def all_ok():
            con = sqlite3.connect(cfg.state)
            try:
                return con.execute("SELECT COUNT(*) FROM folders WHERE last_ok IS NOT NULL"
                                   ).fetchone()[0] == FOLDERS
            except sqlite3.OperationalError:
                return False
            finally:
                con.close()
        end = time.monotonic() + 90
        while not all_ok():
            assert p.poll() is None, daemon_log(p)[-3000:]
            assert time.monotonic() < end, daemon_log(p)[-3000:]
            most = max(most, imap_connections(p.pid, dovecot.imaps_port))
            time.sleep(0.2)
        time.sleep(1)  # the sessions are waiting now
        chosen = random.sample(range(FOLDERS), 10)
        t0 = time.monotonic()
        for i in chosen:
            dovecot.append("alice", "F%03d" % i, msg(i))
        want = {"g%03d" % i for i in chosen}
        end = t0 + POLL + 10
        while not want <= posted_groups(cfg) and time.monotonic() < end:
            most = max(most, imap_connections(p.pid, dovecot.imaps_port))
            time.sleep(0.1)
        took = time.monotonic() - t0
        assert want <= posted_groups(cfg), (sorted(want - posted_groups(cfg)),
                                            daemon_log(p)[-3000:])
        most = max(most, imap_connections(p.pid, dovecot.imaps_port))
        return p, cfg, most, took, chosen
    except BaseException:
        p.kill()
        p.wait()
        raise


def test_hundred_folders_over_four_connections(default_limit_dovecot, tmp_path):
    dovecot = default_limit_dovecot
    p, cfg, most, took, chosen = run_scale(tmp_path, dovecot, MAILFEED)
    try:
        # stored and taken within the poll interval (plus the fetch and
        # one processing pass)
        con = sqlite3.connect(cfg.state)
        n = con.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        con.close()
        assert n == 10
        assert took < POLL + 6, took
        assert 1 <= most <= 4, most
        log = daemon_log(p)
        assert "sessions=4" in log
        assert "Maximum number of connections" not in dovecot.log_text()
        # the after-action reached every folder that had mail
        assert wait_for(lambda: all("\\Seen" in f for i in chosen
                                    for (_u, f, _r) in dovecot.messages("alice", "F%03d" % i)),
                        POLL + 10)
    finally:
        stop_daemon(p)


def test_hundred_folders_fit_in_30_mb(default_limit_dovecot, tmp_path):
    r = subprocess.run(["make", "-s", "mailfeed"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    p, cfg, most, took, _chosen = run_scale(tmp_path, default_limit_dovecot, RELEASE)
    try:
        hwm = vm_hwm_kb(p.pid)
        print("peak RSS with %d folders: %d kB, connections %d, posted in %.1fs"
              % (FOLDERS, hwm, most, took))
        assert hwm < 30 * 1024, hwm
        assert most <= 4
    finally:
        stop_daemon(p)


def test_once_takes_a_hundred_folders_over_one_connection(default_limit_dovecot, tmp_path):
    dovecot = default_limit_dovecot
    for i in range(0, FOLDERS, 7):
        dovecot.append("alice", "F%03d" % i, msg(i))
    cfg = scale_config(tmp_path, dovecot)
    r = run_mailfeed(cfg.path, "run", "--once", timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert posted_groups(cfg) == {"g%03d" % i for i in range(0, FOLDERS, 7)}
    assert all("\\Seen" in f for i in range(0, FOLDERS, 7)
               for (_u, f, _r) in dovecot.messages("alice", "F%03d" % i))
    assert "Maximum number of connections" not in dovecot.log_text()
    assert r.stderr.count("imap.connected") <= 1


def test_a_missing_folder_does_not_stop_the_others_of_its_session(dovecot, tmp_path):
    for f in ("A", "B"):
        dovecot.create_folder("alice", f)
    boxes = {"mailbox %s" % k.lower(): {"account": "alice", "folder": k, "group": "g" + k,
                                        "start": "all"} for k in ("Gone", "A", "B")}
    cfg = write_config(tmp_path, dovecot, mailbox=None,
                       account={"poll_interval": "1s", "max_connections": 1}, **boxes)
    p = start_daemon(cfg.path)
    try:
        assert wait_for(lambda: "imap.connected" in daemon_log(p), 20), daemon_log(p)
        dovecot.append("alice", "A", msg(1))
        dovecot.append("alice", "B", msg(2))
        assert wait_for(lambda: {"gA", "gB"} <= posted_groups(cfg), 15), daemon_log(p)[-3000:]
        r = run_mailfeed(cfg.path, "status", "--json")
        rows = {m["name"]: m for m in json.loads(r.stdout)["mailboxes"]}
        assert "Gone" in (rows["gone"]["last_error"] or ""), rows["gone"]
        assert rows["a"]["last_error"] is None and rows["b"]["last_error"] is None
        # once it exists, it is taken like the others
        dovecot.create_folder("alice", "Gone")
        dovecot.append("alice", "Gone", msg(3))
        assert wait_for(lambda: "gGone" in posted_groups(cfg), 15), daemon_log(p)[-3000:]
        log = stop_daemon(p)
        assert log.count("imap.connected") == 1, log[-3000:]
        assert log.count("imap.folder_error mailbox=gone") == 1, log[-3000:]
    finally:
        if p.poll() is None:
            p.kill()
