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
    cfg = four_folders(tmp_path, dovecot)
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
