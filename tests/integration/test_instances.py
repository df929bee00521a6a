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
import sqlite3
import subprocess
import time
from pathlib import Path

import urllib.error
import urllib.request

from harness.dovecot import free_port
from conftest import (ASAN_OPTIONS, MAILFEED, _daemons, daemon_log, run_mailfeed, start_daemon,
                      stop_daemon, wait_for, write_config)

FOLDERS = ["Alpha", "Beta", "Gamma", "Delta"]
LEASE = 6  # seconds: [gateway] lease_timeout for these tests


def msg(folder, i):
    return ("From: Carol <carol@example.org>\r\nTo: team@example.org\r\n"
            "Subject: %s news %d\r\nMessage-ID: <inst-%s-%d@example.org>\r\n"
            "Date: Mon, 23 Nov 2026 07:00:00 +0000\r\n\r\nNews %d for %s.\r\n"
            % (folder, i, folder.lower(), i, i, folder)).encode()


def four_folders(tmp_path, dovecot, state=None, **gateway_keys):
    for f in FOLDERS:
        dovecot.create_folder("alice", f)
    boxes = {"mailbox %s" % f.lower(): {"account": "alice", "folder": f,
                                        "group": "g-%s" % f.lower(), "after": "seen",
                                        "start": "all"}
             for f in FOLDERS}
    gateway = {"lease_timeout": "%ds" % LEASE}
    gateway.update(gateway_keys)
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


def imap_connections(pid, port):
    """Established TCP connections of pid to the IMAP port."""
    r = subprocess.run(["ss", "-Htnp", "state", "established", "( dport = :%d )" % port],
                       capture_output=True, text=True)
    return sum(1 for line in r.stdout.splitlines() if "pid=%d," % pid in line)


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
    assert "daemon: running, pid %d" % d.pid in text, text
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

DB_NOW_MS = "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"


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
    # on the IMAP side too: one session per folder among the three daemons
    # (a daemon holding nothing keeps no connection)
    assert wait_for(lambda: sum(imap_connections(p, dovecot.imaps_port) for p in pids) == 4,
                    3 * LEASE, step=0.3), \
        [imap_connections(p, dovecot.imaps_port) for p in pids]
    for p in pids:
        assert imap_connections(p, dovecot.imaps_port) == \
            list(mailbox_holders(cfg).values()).count(p)
    text = run_mailfeed(cfg.path, "status").stdout
    assert text.count("version ") == 3 and "last heartbeat" in text, text
    assert "daemon: running, 3 live instance(s)" in text, text

    # mail taken in by an instance that does not parse is parsed and posted
    # by the one that does, without delay
    parser = holders(cfg)["stage:process"]
    other = next((k[len("mailbox:"):] for k, v in mailbox_holders(cfg).items()
                  if v != parser), None)
    if other:
        folder = next(f for f in FOLDERS if f.lower() == other)
        sent = time.monotonic()
        dovecot.append("alice", folder, msg(folder, 7))
        wait_posted(postgres, {"%s news 7" % folder}, 30)
        print("posted through another instance's parse stage in %.1f s"
              % (time.monotonic() - sent))
        assert time.monotonic() - sent < 10

    # kill -9 the holder of alpha: another live instance has it within the
    # lease time, and mail that arrives meanwhile is posted once
    held = mailbox_holders(cfg)
    victim = next(d for d in daemons if d.pid == held["mailbox:alpha"])
    # the take-over time in the database's clock: from just before the kill
    # to the moment the new holder got the lease (leases.since)
    [[killed_ms]] = postgres.sql(DB_NOW_MS)
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    for f in FOLDERS:
        dovecot.append("alice", f, msg(f, 6))
    survivors = [d.pid for d in daemons if d is not victim]
    assert wait_for(lambda: mailbox_holders(cfg).get("mailbox:alpha") in survivors,
                    LEASE + 5, step=0.1), holders(cfg)
    [[since_ms]] = postgres.sql("SELECT since FROM leases WHERE name='mailbox:alpha'")
    took = (int(since_ms) - int(killed_ms)) / 1000
    print("takeover of mailbox:alpha after kill -9: %.2f s (lease_timeout %d s)" % (took, LEASE))
    assert 0 < took <= LEASE + 1.0, took  # the slack: scheduling on a busy machine
    spread(cfg, survivors, 3 * LEASE)
    # the killed instance is shown silent with its last heartbeat
    rc, st, r = status(cfg)
    dead = [i for i in st["instances"] if i["pid"] == victim.pid]
    assert dead and not dead[0]["live"] and dead[0]["holds"] == []
    assert "silent" in run_mailfeed(cfg.path, "status").stdout

    got = wait_posted(postgres, subjects(FOLDERS, range(1, 7)), 90)
    assert_once(got)
    assert len(got) == 24 + (1 if other else 0)
    for d in daemons:
        if d is not victim:
            log = stop_daemon(d, timeout=20)
            assert "cluster.joined" in log
    assert_once(posted(postgres))


def log_of(p):
    return Path(p.log_path).read_text(errors="replace")


def test_a_paused_instance_stops_at_its_deadline_and_comes_back_as_a_follower(
        dovecot, postgres, tmp_path):
    cfg = four_folders(tmp_path, dovecot, state=postgres.dsn)
    a = start_in(cfg, tmp_path / "a")
    assert wait_for(lambda: list(mailbox_holders(cfg).values()) == [a.pid] * 4, 30), \
        holders(cfg)
    b = start_in(cfg, tmp_path / "b")
    # a newcomer: the first gives its excess up between two fetches
    assert wait_for(lambda: sorted(mailbox_holders(cfg).values()) ==
                    sorted([a.pid, a.pid, b.pid, b.pid]), 4 * LEASE, step=0.2), holders(cfg)
    a.send_signal(signal.SIGSTOP)
    try:
        paused_at = time.monotonic()
        assert wait_for(lambda: list(mailbox_holders(cfg).values()) == [b.pid] * 4,
                        LEASE + 5, step=0.1), holders(cfg)
        print("folders of the paused instance taken over after %.2f s"
              % (time.monotonic() - paused_at))
        for f in FOLDERS:
            dovecot.append("alice", f, msg(f, 1))
        time.sleep(1)
        mark = len(log_of(a))
    finally:
        a.send_signal(signal.SIGCONT)
    # back: it finds its leases ended (the local deadline passed while it
    # slept) and logs out of its folders before it does anything else
    assert wait_for(lambda: "cluster.lease_lost" in log_of(a)[mark:], 10), log_of(a)[mark:]
    assert wait_for(lambda: "imap.standby" in log_of(a)[mark:], 10), log_of(a)[mark:]
    after = log_of(a)[mark:].splitlines()
    first_lease = next((i for i, line in enumerate(after)
                        if "cluster.lease_acquired" in line), len(after))
    assert not [line for line in after[:first_lease] if "imap.fetched" in line or
                "imap.after " in line], after
    # and it is one of the two again: the work spreads back
    assert wait_for(lambda: sorted(mailbox_holders(cfg).values()) ==
                    sorted([a.pid, a.pid, b.pid, b.pid]), 4 * LEASE, step=0.2), holders(cfg)
    assert_once(wait_posted(postgres, subjects(FOLDERS, [1]), 60))
    stop_daemon(a, timeout=20)
    stop_daemon(b, timeout=20)
    assert_once(posted(postgres))


def healthz(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_database_outage_pauses_the_work_and_loses_nothing(dovecot, postgres, tmp_path):
    port = free_port()
    cfg = four_folders(tmp_path, dovecot, state=postgres.dsn,
                       metrics_listen="127.0.0.1:%d" % port)
    d = start_in(cfg, tmp_path / "one")
    assert wait_for(lambda: len(mailbox_holders(cfg)) == 4, 30), holders(cfg)
    for f in FOLDERS:
        dovecot.append("alice", f, msg(f, 1))
    assert_once(wait_posted(postgres, subjects(FOLDERS, [1]), 60))

    postgres.server.stop()
    stopped_at = time.monotonic()
    for f in FOLDERS:
        dovecot.append("alice", f, msg(f, 2))
    assert wait_for(lambda: "store.unavailable" in log_of(d), 15), log_of(d)[-3000:]
    code, text = healthz(port)
    assert code == 503 and "state database: unreachable" in text, text
    r = run_mailfeed(cfg.path, "status")
    assert r.returncode == 1 and "state database unreachable" in r.stderr, r.stderr
    # past the lease time: every lease ended here; nothing was fetched meanwhile
    time.sleep(max(0, LEASE + 2 - (time.monotonic() - stopped_at)))
    assert d.poll() is None
    postgres.server.start()
    assert wait_for(lambda: "store.resumed" in log_of(d), 30), log_of(d)[-3000:]
    assert wait_for(lambda: healthz(port)[0] == 200, 30), healthz(port)
    assert_once(wait_posted(postgres, subjects(FOLDERS, [1, 2]), 90))
    log = stop_daemon(d, timeout=20)
    assert log.count("store.unavailable") == 1, log
    assert log.count("store.resumed") == 1, log
    # while it waited nothing was taken in nor acknowledged on the server
    away = log[log.index("store.unavailable"):log.index("store.resumed")]
    assert "imap.fetched" not in away and "imap.after " not in away, away
    # and every session left its folder (IDLE included) while it waited
    left = set(re.findall(r"(?:imap\.standby|watcher\.paused) mailbox=(\w+)", away))
    assert left == {f.lower() for f in FOLDERS}, away
    assert re.search(r"store\.resumed waited_s=\d+\.\d", log)


def test_reload_with_a_new_lease_time_joins_again(dovecot, tmp_path):
    cfg = four_folders(tmp_path, dovecot, state=str(tmp_path / "state.db"))
    d = start_daemon(cfg)
    assert wait_for(lambda: len(mailbox_holders(cfg)) == 4, 30), holders(cfg)
    [before] = status(cfg)[1]["instances"]
    text = Path(cfg.path).read_text().replace("lease_timeout = %ds" % LEASE,
                                              "lease_timeout = %ds" % (LEASE + 1))
    Path(cfg.path).write_text(text)
    d.send_signal(signal.SIGHUP)
    assert wait_for(lambda: daemon_log(d).count("cluster.joined") == 2, 20), daemon_log(d)
    assert "lease_s=%.1f" % (LEASE + 1) in daemon_log(d)
    # the old membership left with its leases; the new one has them all
    assert wait_for(lambda: [i["id"] for i in status(cfg)[1]["instances"]] != [before["id"]]
                    and len(status(cfg)[1]["instances"]) == 1 and
                    len(mailbox_holders(cfg)) == 4, 30), status(cfg)[1]
    dovecot.append("alice", "Beta", msg("Beta", 1))
    con = sqlite3.connect(str(tmp_path / "state.db"))
    try:
        assert wait_for(lambda: con.execute(
            "SELECT COUNT(*) FROM local_items WHERE subject='Beta news 1'").fetchone()[0] == 1,
            30)
    finally:
        con.close()
    stop_daemon(d)
