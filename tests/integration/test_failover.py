"""Three instances sharing one PostgreSQL state, one Dovecot account with a
backlog in four folders, the local feed: the instance holding a folder's
lease is killed with SIGKILL at random moments, again and again, and
started again each time.  In the end every message is posted exactly
once (counted by Message-ID in the local feed), every digest and every
notification went out once — none twice, and none missing but those the
crash rules allow: an instance killed after recording a mail as going to
the relay and before the relay had all of it leaves it 'maybe-sent' —
and the time each lease took to be taken over is printed (min / median /
max).

Each instance runs `mailfeed run` in a working directory of its own with
a configuration of its own (same state, secret, mailboxes, subscribers;
its own feed directory).  The lease is short (LEASE), so that twenty
take-overs fit in about a minute; MAILFEED_FAILOVER_LONG=1 runs a longer
version (10,000 messages, 60 kills)."""
import json
import os
import random
import signal
import statistics
import subprocess
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import pytest

import conftest
from conftest import (MAILFEED, _env, daemon_log, run_mailfeed, stop_daemon, wait_for,
                      write_config)

LONG = os.environ.get("MAILFEED_FAILOVER_LONG") == "1"
MESSAGES = 10000 if LONG else 2000
KILLS = 60 if LONG else 20
SCALE = MESSAGES // 2000  # the waits grow with the backlog
FOLDERS = ["Appeals", "Board", "Events", "Volunteers"]
INSTANCES = 3
LEASE = "2s"
LEASE_S = 2.0
EACH = "ann@example.org"  # a notification for each post of the first folder
DAILY = ["bob@example.org", "cat@example.org"]  # one daily digest of every group
SEEDS = 3  # posts in the feed before the start


@pytest.fixture(autouse=True)
def _daemon_knows_instances(tmp_path):
    """Skips on a build whose daemon does not yet share its work (no lease
    key in [gateway])."""
    cfg = write_config(tmp_path / "probe", gateway={"lease_timeout": "30s"},
                       feed={"claim_timeout": "5m"})
    r = run_mailfeed(cfg, "check-config")
    if "unknown key" in r.stderr:
        pytest.skip("this build's daemon does not share work between instances yet")


def mail(folder, i, date):
    m = EmailMessage()
    m["From"] = "Writer %d <writer%d@example.org>" % (i % 17, i % 17)
    m["To"] = "%s@example.org" % folder.lower()
    m["Subject"] = "%s item %d" % (folder, i)
    m["Date"] = format_datetime(date)
    m["Message-ID"] = "<fo.%s.%d@example.org>" % (folder.lower(), i)
    m.set_content("Item %d of %s: the plan for week %d, the numbers and who does what.\n"
                  % (i, folder, i % 52))
    return m.as_bytes()


class Instance:
    """One `mailfeed run` in its own working directory; started again
    after a kill with the same configuration."""

    def __init__(self, cfg):
        self.cfg, self.proc, self.runs = cfg, None, 0

    def start(self):
        self.runs += 1
        log = Path(self.cfg.dir) / ("daemon%d.log" % self.runs)
        with open(log, "wb") as f:
            self.proc = subprocess.Popen([MAILFEED, "-c", self.cfg.path, "run"],
                                         stdout=subprocess.DEVNULL, stderr=f, cwd=self.cfg.dir,
                                         env=_env(None))
        self.proc.log_path = str(log)
        conftest._daemons.append(self.proc)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        log = daemon_log(self.proc)
        assert "ERROR: AddressSanitizer" not in log and "runtime error" not in log, log[-3000:]


def configs(tmp_path, dovecot, postgres, smtp_sink, tls_ca):
    secret = tmp_path / "secret"
    secret.write_bytes(os.urandom(32))
    secret.chmod(0o600)
    sections = {}
    for f in FOLDERS:
        sections["mailbox " + f.lower()] = {"account": "alice", "folder": f, "group": f.lower(),
                                            "after": "keep", "start": "all"}
    return [write_config(tmp_path / ("host%d" % k), dovecot, mailbox=None,
                         gateway={"state": postgres.dsn, "secret_file": str(secret),
                                  "lease_timeout": LEASE},
                         feed={"claim_timeout": "5s"},
                         smtp={"url": "smtp://127.0.0.1:%d" % smtp_sink.port,
                               "from": "Feed <feed-bot@example.org>",
                               "ca_file": tls_ca.ca_file},
                         digest={"hour": 0, "timezone": "UTC"}, **sections)
            for k in range(INSTANCES)]


def holders(postgres, folders_only=True):
    """{lease name: (holder pid, holder id)} of the mailbox leases (or of
    all)."""
    held = rows(postgres, "SELECT l.name, i.pid, l.holder FROM leases l"
                          " JOIN instances i ON i.id = l.holder")
    return {name: (int(pid), holder) for name, pid, holder in held
            if not folders_only or name.startswith("mailbox:")}


def settled(postgres):
    """Notifications and digests recorded sent or maybe-sent."""
    r = rows(postgres, "SELECT COUNT(*) FROM digest_runs WHERE state IN ('sent', 'maybe-sent')")
    return int(r[0][0]) if r else 0


def rows(postgres, query):
    """The rows of query, none while the daemon has not made its tables."""
    try:
        return postgres.sql(query)
    except RuntimeError as e:
        if "does not exist" in str(e):
            return []
        raise


def posted(postgres):
    r = rows(postgres, "SELECT COUNT(*) FROM local_items")
    return int(r[0][0]) if r else 0


def test_kill9_of_lease_holders_loses_and_doubles_nothing(dovecot, postgres, smtp_sink, tls_ca,
                                                          tmp_path, capsys):
    rng = random.Random(int(os.environ.get("MAILFEED_FAILOVER_SEED", "0")) or None)
    start = datetime.now(timezone.utc) - timedelta(days=1)
    per = MESSAGES // len(FOLDERS)
    for n, f in enumerate(FOLDERS):
        dovecot.bulk_import("alice", f, [mail(f, i, start + timedelta(seconds=n * per + i))
                                         for i in range(per)])
    cfgs = configs(tmp_path, dovecot, postgres, smtp_sink, tls_ca)
    # daily readers of every group, subscribed long ago: today's digest is
    # due at once (a reader subscribed after today's digest hour waits for
    # tomorrow's)
    # (and the reader of each post, subscribed before any was delivered,
    # however fast the first ones come)
    for d in DAILY:
        r = run_mailfeed(cfgs[0], "subscribe", d, "--groups",
                         ",".join(f.lower() for f in FOLDERS), "--daily")
        assert r.returncode == 0, r.stderr
    r = run_mailfeed(cfgs[0], "subscribe", EACH, "--groups", FOLDERS[0].lower(), "--each")
    assert r.returncode == 0, r.stderr
    postgres.sql("UPDATE subscribers SET since = 0")
    # something to put in it: the first digest run comes with the start,
    # before the backlog is posted (an empty period sends nothing)
    now = int(time.time())
    postgres.sql("INSERT INTO local_items(key, grp, author_name, author_email, subject, text,"
                 " created) VALUES " + ",".join(
                     "('seed%d', 'board', 'Ann', 'ann@example.org', 'Earlier %d', 'Text %d.',"
                     " %d)" % (i, i, i, now - 600 + i) for i in range(SEEDS)))
    insts = [Instance(c) for c in cfgs]
    t0 = time.monotonic()
    for inst in insts:
        inst.start()
    assert wait_for(lambda: len(holders(postgres)) == len(FOLDERS), 60), \
        "the folders' leases were never all held:\n" + daemon_log(insts[0].proc)[-3000:]

    # odd kills: the instance is started again at once, as its unit would
    # on the same host; even kills: only after its leases were taken over,
    # as when a host is lost (the lease must expire)
    takeovers = {"restarted at once": [], "host lost": []}
    killed_pids = set()
    for k in range(KILLS):
        mode = "host lost" if k % 2 else "restarted at once"
        time.sleep(rng.uniform(0.0, 1.5))
        held = holders(postgres)
        by_pid = {inst.proc.pid: inst for inst in insts}
        choices = [(name, pid) for name, (pid, _) in held.items() if pid in by_pid]
        assert choices, "no lease held by a running instance: %s" % held
        name, pid = rng.choice(choices)
        victim = by_pid[pid]
        # every lease of the dead instance is taken over by a live one: its
        # folders and, if it had it, the parse stage
        lost = {n: h for n, (p, h) in holders(postgres, False).items() if p == pid}
        killed = time.monotonic()
        killed_pids.add(victim.proc.pid)
        victim.kill()
        if mode == "restarted at once":
            victim.start()
        assert wait_for(lambda: all(holders(postgres, False).get(n, (0, h))[1] != h
                                    for n, h in lost.items()), LEASE_S * 4 + 10, step=0.02), \
            "lease %s not taken over: %s" % (name, holders(postgres))
        takeovers[mode].append(time.monotonic() - killed)
        if mode == "host lost":
            victim.start()
    chaos = time.monotonic() - t0

    # everything arrives once the kills stop
    assert wait_for(lambda: posted(postgres) >= MESSAGES + SEEDS, 240 * SCALE, step=0.5), \
        "%d of %d posted" % (posted(postgres) - SEEDS, MESSAGES)
    # every notification and digest is settled: sent, or (its instance
    # killed after recording it and before the relay had all of it)
    # maybe-sent; none is still claimed by a dead instance
    assert wait_for(lambda: settled(postgres) == per + len(DAILY), 120 * SCALE, step=0.5), \
        "%d of %d mails settled" % (settled(postgres), per + len(DAILY))
    time.sleep(3 * LEASE_S)  # anything sent twice would come now
    # status shows the three running instances as live (a killed one is
    # listed as silent until an instance of its host finds it gone)
    st = json.loads(run_mailfeed(cfgs[0], "status", "--json").stdout)
    live = sorted(i["pid"] for i in st["instances"] if i["live"])
    assert live == sorted(inst.proc.pid for inst in insts), st["instances"]
    assert all(i["pid"] in killed_pids for i in st["instances"] if not i["live"])
    for inst in insts:
        stop_daemon(inst.proc, timeout=30)
    total = time.monotonic() - t0

    # every message posted exactly once, by Message-ID
    items = postgres.sql("SELECT t.payload FROM local_items l JOIN outbox o ON o.key = l.key"
                         " JOIN outbox_payloads t ON t.item = o.id WHERE l.parent IS NULL")
    ids = Counter(json.loads(p)["message_id"] for p, in items)
    want = {"fo.%s.%d@example.org" % (f.lower(), i) for f in FOLDERS for i in range(per)}
    twice = {m: c for m, c in ids.items() if c > 1}
    assert not twice, "posted more than once: %s" % sorted(twice)[:20]
    assert not want - set(ids), "never posted: %s" % sorted(want - set(ids))[:20]
    assert posted(postgres) == MESSAGES + SEEDS
    assert postgres.sql("SELECT COUNT(*) FROM outbox WHERE state <> 'delivered'") == [["0"]]

    # every notification and every digest went out once; the only ones
    # that may be missing are those recorded maybe-sent (README: the one
    # window of the digest crash rules), never more than one each
    mails = smtp_sink.messages()
    to = Counter(r for env, _m, _r in mails for r in env["rcpt_tos"])
    maybe = int(postgres.sql("SELECT COUNT(*) FROM digest_runs WHERE email='%s'"
                             " AND state='maybe-sent'" % EACH)[0][0])
    assert per - maybe <= to[EACH] <= per, (to, maybe)
    for d in DAILY:
        assert to[d] == 1, to
    notes = Counter(m["Message-ID"] for env, m, _r in mails if EACH in env["rcpt_tos"])
    assert len(notes) == to[EACH] and set(notes.values()) == {1}
    subjects = Counter(m["Subject"] for env, m, _r in mails if EACH in env["rcpt_tos"])
    assert all(c == 1 for c in subjects.values()), subjects.most_common(3)

    with capsys.disabled():
        print("\nfailover: %d messages, %d kills -9 of a lease holder in %.0f s (whole test "
              "%.0f s); lease_timeout %s" % (MESSAGES, KILLS, chaos, total, LEASE))
        print("  notifications: %d of %d at the relay, %d recorded maybe-sent (killed in the"
              " window between the record and the end of the data)" % (to[EACH], per, maybe))
        for mode, times in takeovers.items():
            print("  take-over, %s: min %.2f s, median %.2f s, max %.2f s (%d kills)"
                  % (mode, min(times), statistics.median(times), max(times), len(times)))
    assert max(takeovers["host lost"]) <= LEASE_S * 4 + 5
    assert max(takeovers["restarted at once"]) <= LEASE_S * 4 + 5
