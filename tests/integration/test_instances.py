"""Several instances of the daemon on one state: each mapped folder is
watched by exactly one of them at a time (a lease per folder), one parses
(the "stage:process" lease), and `status` lists every instance with the
leases it holds.  On PostgreSQL: 2-3 daemons on one config file (each with
its own working directory and log) share four folders of one Dovecot
account; mail is posted once; a killed holder's folders are taken over
within lease_timeout; a paused one stops fetching at its local deadline and
comes back as a follower; the database stopped for a few seconds pauses the
work (store.unavailable / store.resumed) and loses nothing.  On SQLite one
daemon holds everything and a second one is still refused."""
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (ASAN_OPTIONS, MAILFEED, _daemons, daemon_log, run_mailfeed, start_daemon,
                      stop_daemon, wait_for, write_config)

FOLDERS = ["Alpha", "Beta", "Gamma", "Delta"]
LEASE = 6  # seconds: [gateway] lease_timeout for these tests


def msg(folder, i):
    return ("From: Carol <carol@example.org>\r\nTo: team@example.org\r\n"
            "Subject: %s news %d\r\nMessage-ID: <inst-%s-%d@example.org>\r\n"
            "Date: Mon, 23 Nov 2026 07:00:00 +0000\r\n\r\nNews %d for %s.\r\n"
            % (folder, i, folder.lower(), i, i, folder)).encode()


def four_folders(tmp_path, dovecot, state=None):
    for f in FOLDERS:
        dovecot.create_folder("alice", f)
    boxes = {"mailbox %s" % f.lower(): {"account": "alice", "folder": f,
                                        "group": "g-%s" % f.lower(), "after": "seen",
                                        "start": "all"}
             for f in FOLDERS}
    gateway = {"lease_timeout": "%ds" % LEASE}
    if state:
        gateway["state"] = state
    return write_config(tmp_path, dovecot, mailbox=None, gateway=gateway,
                        account={"max_connections": 4, "poll_interval": "2s"}, **boxes)


def status(cfg):
    r = run_mailfeed(cfg.path, "status", "--json", timeout=60)
    assert "Sanitizer" not in r.stderr, r.stderr
    return r.returncode, (json.loads(r.stdout) if r.stdout.strip() else None), r


def holders(cfg):
    """{lease name: pid of its live holder} from status."""
    rc, st, r = status(cfg)
    assert st is not None, r.stdout + r.stderr
    out = {}
    for inst in st["instances"] or []:
        if inst["live"]:
            for name in inst["holds"]:
                out[name] = inst["pid"]
    return out


def mailbox_holders(cfg):
    return {k: v for k, v in holders(cfg).items() if k.startswith("mailbox:")}


def start_in(cfg, workdir, env=None):
    """`mailfeed run` on cfg from a working directory of its own, logging
    there."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "daemon.log"
    e = dict(os.environ, ASAN_OPTIONS=ASAN_OPTIONS)
    e.update(env or {})
    with open(log_path, "wb") as log:
        p = subprocess.Popen([MAILFEED, "-c", cfg.path, "run"], cwd=str(workdir),
                             stdout=subprocess.DEVNULL, stderr=log, env=e)
    p.log_path = str(log_path)
    _daemons.append(p)
    return p


def test_one_daemon_on_sqlite_holds_every_folder_and_the_parse_stage(dovecot, tmp_path):
    cfg = four_folders(tmp_path, dovecot, state=str(tmp_path / "state.db"))
    for f in FOLDERS:
        dovecot.append("alice", f, msg(f, 1))
    d = start_daemon(cfg)
    want = {"mailbox:" + f.lower() for f in FOLDERS} | {"stage:process"}
    assert wait_for(lambda: set(holders(cfg)) == want, 30), holders(cfg)
    rc, st, r = status(cfg)
    [inst] = st["instances"]
    assert inst["pid"] == d.pid and inst["live"] and inst["host"]
    assert inst["version"] and inst["heartbeat_age_s"] <= LEASE
    text = run_mailfeed(cfg.path, "status").stdout
    assert "instances:" in text and "pid %d" % d.pid in text
    assert "holds mailbox:alpha, mailbox:beta, mailbox:delta, mailbox:gamma, stage:process" \
        in text, text
    # the state lock still allows one daemon on an SQLite file
    second = start_daemon(cfg)
    assert second.wait(30) == 1
    assert "another mailfeed (pid %d)" % d.pid in daemon_log(second)
    log = stop_daemon(d)
    assert "cluster.joined" in log
    # a daemon that stopped left: no instance, no lease
    rc, st, r = status(cfg)
    assert st["instances"] == []


# ------------------------------------------------------------- PostgreSQL

def posted(pg):
    """{subject: times posted} of the local feed."""
    out = {}
    try:
        rows = pg.sql("SELECT subject FROM local_items")
    except RuntimeError:  # not yet created
        return out
    for (subject,) in rows:
        out[subject] = out.get(subject, 0) + 1
    return out


def subjects(folders, numbers):
    return {"%s news %d" % (f, i) for f in folders for i in numbers}


def wait_posted(pg, want, timeout):
    ok = wait_for(lambda: want <= set(posted(pg)), timeout, step=0.3)
    got = posted(pg)
    assert ok, "missing: %s" % sorted(want - set(got))
    return got


def assert_once(got):
    twice = {s: n for s, n in got.items() if n != 1}
    assert not twice, "posted more than once: %s" % twice


def spread(cfg, pids, timeout):
    """Waits until the four folders are held, each by one of pids."""
    want = {"mailbox:" + f.lower() for f in FOLDERS}
    ok = wait_for(lambda: set(mailbox_holders(cfg)) == want and
                  set(mailbox_holders(cfg).values()) <= set(pids), timeout, step=0.3)
    assert ok, holders(cfg)
    return mailbox_holders(cfg)


def test_three_daemons_share_four_folders_and_take_over_a_killed_one(dovecot, postgres,
                                                                      tmp_path):
    cfg = four_folders(tmp_path, dovecot, state=postgres.dsn)
    for f in FOLDERS:
        for i in range(1, 6):
            dovecot.append("alice", f, msg(f, i))
    daemons = [start_in(cfg, tmp_path / ("instance%d" % n)) for n in range(3)]
    pids = [d.pid for d in daemons]
    # every instance registered; each folder held by exactly one of them,
    # and the work is spread: no instance holds more than its share (2)
    assert wait_for(lambda: sorted(i["pid"] for i in status(cfg)[1]["instances"]) ==
                    sorted(pids), 30), status(cfg)[1]
    spread(cfg, pids, 3 * LEASE)
    assert wait_for(lambda: max(list(mailbox_holders(cfg).values()).count(p)
                                for p in pids) <= 2, 4 * LEASE), holders(cfg)
    assert list(holders(cfg)).count("stage:process") == 1
    text = run_mailfeed(cfg.path, "status").stdout
    assert text.count("version ") == 3 and "last heartbeat" in text, text

    # kill -9 the holder of alpha: another live instance has it within the
    # lease time, and mail that arrives meanwhile is posted once
    held = mailbox_holders(cfg)
    victim = next(d for d in daemons if d.pid == held["mailbox:alpha"])
    killed_at = time.monotonic()
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    for f in FOLDERS:
        dovecot.append("alice", f, msg(f, 6))
    survivors = [d.pid for d in daemons if d is not victim]
    assert wait_for(lambda: mailbox_holders(cfg).get("mailbox:alpha") in survivors,
                    LEASE + 5, step=0.1), holders(cfg)
    took = time.monotonic() - killed_at
    print("takeover of mailbox:alpha after kill -9: %.2f s (lease_timeout %d s)" % (took, LEASE))
    assert took <= LEASE + 1.0, took
    spread(cfg, survivors, 3 * LEASE)
    # the killed instance is shown silent with its last heartbeat
    rc, st, r = status(cfg)
    dead = [i for i in st["instances"] if i["pid"] == victim.pid]
    assert dead and not dead[0]["live"] and dead[0]["holds"] == []
    assert "silent" in run_mailfeed(cfg.path, "status").stdout

    got = wait_posted(postgres, subjects(FOLDERS, range(1, 7)), 90)
    assert_once(got)
    assert len(got) == 24
    for d in daemons:
        if d is not victim:
            log = stop_daemon(d, timeout=20)
            assert "cluster.joined" in log
    assert_once(posted(postgres))
