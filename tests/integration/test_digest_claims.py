"""Several instances sharing one PostgreSQL state send every digest and every
queued notice once.

Three processes run the digest duty (`mailfeed digest`) for the same
subscribers and period at the same moment: each period is claimed before
its mail is composed, by an insert only one instance wins, so every
subscriber gets exactly one digest between them.  The same for queued
notices, which three `run --once` processes claim with FOR UPDATE SKIP
LOCKED.

The crash rule these tests hold the instances to is the single host's
(README, "How it works inside"): a mail is recorded as sent ('sending') in
one commit just before the end of its data goes to the relay.
  - killed before that commit (composing, or in the SMTP dialogue): its
    relay got nothing; the claim of the killed instance is taken over (at
    once on the same host: its process is gone; at the claim's deadline from
    another host) and the mail is sent by another instance or the next run;
  - killed after it (here: the relay holds the whole message and has not
    answered yet): it counts as sent and is never sent again, by any
    instance ('maybe-sent').
So a kill -9 of one instance in the middle of a run doubles nothing and
skips nobody.  (The instant between that commit and the last bytes leaving
the process cannot be hit on purpose; it is the one case in which a mail
can be missed, on one host as on several.)"""
import signal
import subprocess
import time
from collections import Counter

import pytest

from conftest import (MAILFEED, _env, pg_state_for, run_mailfeed, start_daemon, state_db,
                      stop_daemon, write_config)

N = 120
KILL_AFTER = 30


def counts(sink):
    return Counter(r for env, _msg, _raw in sink.messages() for r in env["rcpt_tos"])


def settle(sink):
    """Waits until no mail has arrived for half a second; the count."""
    n, quiet = len(sink.messages()), 0
    while quiet < 10:
        time.sleep(0.05)
        m = len(sink.messages())
        quiet = quiet + 1 if m == n else 0
        n = m
    return n


def start(cfg, *args):
    return subprocess.Popen([MAILFEED, "-c", cfg.path, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(None))


def finish(procs, timeout=300):
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        assert "ERROR: AddressSanitizer" not in err, err[-3000:]
        outs.append((p.returncode, out, err))
    return outs


def exactly_once(sink, addresses):
    c = counts(sink)
    twice = sorted(a for a, n in c.items() if n > 1)
    missing = sorted(set(addresses) - set(c))
    assert not twice and not missing, {"twice": twice, "missing": missing}


def kill_the_held_one(procs, hold):
    """The sink holds one instance's mail at hold.stage: the other instances
    go on and end (they leave alone what the held one claimed, it is alive);
    the one still running is the held one: kill -9 it, let the sink go on.
    Returns (the killed process, the outputs of the others)."""
    assert hold.reached.wait(120), "the sink never got to mail %d" % (KILL_AFTER + 1)
    try:
        deadline = time.monotonic() + 50
        while sum(p.poll() is None for p in procs) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        running = [p for p in procs if p.poll() is None]
        assert len(running) == 1, [p.poll() for p in procs]
        victim = running[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)  # reaped: its pid is gone from this host
    finally:
        hold.release.set()
    return victim, finish([p for p in procs if p is not victim])


def claims_of(cfg, table, pid, states):
    """{state: rows} of table claimed by the process pid, in one of states
    (the work it left unfinished)."""
    con = state_db(cfg)
    rows = Counter(r[0] for r in con.execute("SELECT state, claimed_by FROM %s" % table)
                   if r[1] and int(r[1].split(":")[1]) == pid and r[0] in states)
    con.close()
    return dict(rows)


# ------------------------------------------------------------------ digests

def readers():
    return ["reader%03d@example.org" % i for i in range(N)]


@pytest.fixture
def digest_cfg(tmp_path, smtp_sink, tls_ca):
    subs = "".join("[subscriber %s]\ngroups = team\nfrequency = daily\n\n" % a
                   for a in readers())
    cfg = write_config(
        tmp_path, gateway={"state": pg_state_for(tmp_path)},
        smtp={"url": "smtp://127.0.0.1:%d" % smtp_sink.port,
              "from": "Feed digest <digest@example.org>", "ca_file": tls_ca.ca_file},
        digest={"hour": 0, "timezone": "UTC"}, extra=subs)
    cfg.state = pg_state_for(tmp_path)
    r = run_mailfeed(cfg, "digest")  # creates the state, seeds the subscribers
    assert r.returncode == 0 and r.stdout.strip() == "0 emails sent", r.stderr
    con = state_db(cfg)
    now = int(time.time())
    con.executemany(
        "INSERT INTO local_items(key, grp, parent, author_name, author_email, subject, text,"
        " created) VALUES(?, 'team', NULL, 'Ann', 'ann@example.org', ?, ?, ?)",
        [("k%d" % i, "Topic %d" % i, ("Text of post %d.\n" % i) * 20, now - 600 + i)
         for i in range(5)])
    con.execute("UPDATE subscribers SET since=0")  # today's period is due for all
    con.commit()
    con.close()
    return cfg


def digest_rows(cfg):
    today = time.strftime("d:%Y-%m-%d", time.gmtime())
    con = state_db(cfg)
    rows = dict((r[0], r[1]) for r in con.execute(
        "SELECT state, COUNT(*) FROM digest_runs WHERE period=? GROUP BY state", (today,)))
    con.close()
    return rows


def test_three_instances_send_each_digest_once(digest_cfg, smtp_sink):
    procs = [start(digest_cfg, "digest") for _ in range(3)]
    outs = finish(procs)
    assert all(rc == 0 for rc, _o, _e in outs), outs
    sent = [int(out.split()[0]) for _rc, out, _e in outs]
    assert sum(sent) == N, sent
    exactly_once(smtp_sink, readers())
    assert digest_rows(digest_cfg) == {"sent": N}
    # the work was shared, not done by one while the others waited
    assert sum(1 for n in sent if n > 0) >= 2, sent
    r = run_mailfeed(digest_cfg, "digest")
    assert r.returncode == 0 and r.stdout.strip() == "0 emails sent", (r.stdout, r.stderr)
    assert len(smtp_sink.messages()) == N


@pytest.mark.parametrize("stage", ["RCPT", "DATA"])
def test_kill9_of_one_instance_mid_send(digest_cfg, smtp_sink, stage):
    """RCPT: killed in the SMTP dialogue, its claimed digests were not
    recorded: the next run takes its claims over and sends them.  DATA:
    killed while the relay held the whole message: its group was recorded,
    is delivered once and never sent again."""
    hold = smtp_sink.pause(stage, after=KILL_AFTER)
    procs = [start(digest_cfg, "digest") for _ in range(3)]
    victim, outs = kill_the_held_one(procs, hold)
    assert all(rc == 0 for rc, _o, _e in outs), outs
    settle(smtp_sink)
    left = claims_of(digest_cfg, "digest_runs", victim.pid, ("claimed", "sending"))
    claimed, sending = left.get("claimed", 0), left.get("sending", 0)
    # in the dialogue: its group of up to 8 side by side and the next one
    # composed; the group before, accepted by the relay, is still 'sending'
    # (marked 'sent' with the next group's record, which never came)
    assert claimed <= 9 and sending <= 8, left
    assert (claimed if stage == "RCPT" else sending) >= 1, left
    r = run_mailfeed(digest_cfg, "digest", timeout=300)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.split()[0]) == claimed, (r.stdout, r.stderr)
    if claimed:
        assert "digest.claim_taken" in r.stderr
    if sending:
        assert "digest.maybe_sent" in r.stderr
    exactly_once(smtp_sink, readers())
    # maybe delivered (here: delivered), never sent again
    want = {"sent": N - sending, "maybe-sent": sending}
    assert digest_rows(digest_cfg) == {k: v for k, v in want.items() if v}
    r = run_mailfeed(digest_cfg, "digest")
    assert r.returncode == 0 and r.stdout.strip() == "0 emails sent", (r.stdout, r.stderr)
    assert len(smtp_sink.messages()) == N


def test_three_daemons_share_the_due_digests(digest_cfg, smtp_sink):
    """The daemons' own digest duty: three `mailfeed run` on the state, each
    sending what is due as it starts; every reader gets one digest."""
    daemons = [start_daemon(digest_cfg) for _ in range(3)]
    try:
        smtp_sink.wait_for(N, timeout=120)
        settle(smtp_sink)
    finally:
        logs = [stop_daemon(p) for p in daemons]
    exactly_once(smtp_sink, readers())
    assert digest_rows(digest_cfg) == {"sent": N}
    sent = [log.count("digest.sent ") for log in logs]
    assert sum(sent) == N, sent


# ------------------------------------------------------------------ notices

def notified():
    return ["sender%03d@example.org" % i for i in range(N)]


@pytest.fixture
def notice_cfg(tmp_path, dovecot, smtp_sink, tls_ca):
    dovecot.create_folder("alice", "Team")
    cfg = write_config(
        tmp_path, dovecot, folder="Team", gateway={"state": pg_state_for(tmp_path)},
        smtp={"url": "smtp://127.0.0.1:%d" % smtp_sink.port,
              "from": "Feed <feed-bot@example.org>", "ca_file": tls_ca.ca_file})
    cfg.state = pg_state_for(tmp_path)
    r = run_mailfeed(cfg, "status")  # creates the state
    assert r.returncode == 0, r.stderr
    con = state_db(cfg)
    now = int(time.time())
    con.executemany(
        "INSERT INTO notice_queue(address, reason, mail, created) VALUES(?, 'too-large', ?, ?)",
        [(a, ("From: Feed <feed-bot@example.org>\r\nTo: %s\r\nSubject: Your message was not"
              " posted\r\nMessage-ID: <n%d@example.org>\r\n\r\nIt was too large.\r\n"
              % (a, i)).encode(), now) for i, a in enumerate(notified())])
    con.commit()
    con.close()
    return cfg


def notice_rows(cfg):
    con = state_db(cfg)
    rows = dict((r[0], r[1]) for r in con.execute(
        "SELECT state, COUNT(*) FROM notice_queue GROUP BY state"))
    con.close()
    return rows


def test_three_instances_send_each_notice_once(notice_cfg, smtp_sink):
    procs = [start(notice_cfg, "run", "--once") for _ in range(3)]
    outs = finish(procs)
    senders = sum(1 for _rc, _o, err in outs if "notice.sent" in err)
    exactly_once(smtp_sink, notified())
    assert notice_rows(notice_cfg) == {"sent": N}
    assert senders >= 2, [err[-2000:] for _rc, _o, err in outs]


@pytest.mark.parametrize("stage", ["RCPT", "DATA"])
def test_kill9_of_one_notice_sender_mid_send(notice_cfg, smtp_sink, stage):
    """RCPT: the killed sender's claimed notices were not recorded: the next
    run claims them again at once and sends them.  DATA: recorded 'sending'
    and delivered: never sent again."""
    hold = smtp_sink.pause(stage, after=KILL_AFTER)
    procs = [start(notice_cfg, "run", "--once") for _ in range(3)]
    victim, _outs = kill_the_held_one(procs, hold)
    settle(smtp_sink)
    left = claims_of(notice_cfg, "notice_queue", victim.pid, ("pending", "sending"))
    want = "pending" if stage == "RCPT" else "sending"
    assert set(left) == {want} and 1 <= left[want] <= 8, left
    before = len(smtp_sink.messages())
    r = run_mailfeed(notice_cfg, "run", "--once", timeout=120)
    assert "ERROR: AddressSanitizer" not in r.stderr, r.stderr
    assert len(smtp_sink.messages()) - before == left.get("pending", 0)
    exactly_once(smtp_sink, notified())
    rows = notice_rows(notice_cfg)
    if stage == "RCPT":
        assert rows == {"sent": N}, rows
    else:
        assert rows == {"sent": N - left["sending"], "sending": left["sending"]}, rows
    run_mailfeed(notice_cfg, "run", "--once", timeout=120)
    assert len(smtp_sink.messages()) == N
