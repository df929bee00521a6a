"""The IMAP client against a server that lies, floods, stalls or churns
(harness/hostile_imap.py): memory stays bounded by max_message_size, a
slow or silent server times out per command, an EXISTS in every answer
makes no busy loop, a huge UID SEARCH answer is sorted fast, and the last
possible UID or a UIDVALIDITY that changes on every SELECT neither refetch
without end nor go unsaid in `status`."""
import json
import os
import re
import subprocess
import time

import pytest

from conftest import (ASAN_OPTIONS, IMAPPROBE, Secret, run_mailfeed, start_daemon, stop_daemon,
                      wait_for, write_config)

PROBE = IMAPPROBE
pytestmark = pytest.mark.usefixtures("imapprobe")


def msg(i, body=None):
    body = body or "Body of message %d.\r\n" % i
    return ("From: Carol <carol@example.org>\r\nTo: team@example.org\r\n"
            "Subject: Message %d\r\nMessage-ID: <m%d@example.org>\r\n"
            "Date: Mon, 23 Nov 2026 07:00:00 +0000\r\n\r\n%s" % (i, i, body)).encode()


def config(tmp_path, srv, timeout=10, gateway=None, **account):
    acct = {"host": "127.0.0.1", "port": srv.port, "tls": "none", "username": srv.user,
            "password_file": Secret(srv.password), "timeout": timeout}
    acct.update(account)
    return write_config(tmp_path, None, gateway=gateway or {},
                        **{"account alice": acct,
                           "mailbox team": {"account": "alice", "folder": "INBOX",
                                            "group": "team", "after": "seen",
                                            "start": "all"}})


def probe(cfg, *args, timeout=60):
    env = dict(os.environ, ASAN_OPTIONS=ASAN_OPTIONS)
    t0 = time.monotonic()
    r = subprocess.run([PROBE, str(cfg), "alice", "INBOX", *args], capture_output=True,
                       text=True, timeout=timeout, env=env)
    r.elapsed = time.monotonic() - t0
    return r


def fetched(out):
    return {int(m.group(1)): (int(m.group(2)), m.group(3) != "none")
            for m in re.finditer(r"^uid=(\d+) size=(\d+) date=\d+ sha256=(\w+)$", out, re.M)}


# ------------------------------------------------------------------ memory

@pytest.mark.parametrize("real_size", [150 * 1024, 2 * 1024 * 1024])
def test_message_larger_than_claimed_is_too_large_and_the_rest_arrives(hostile, tmp_path,
                                                                        real_size):
    """RFC822.SIZE says 100 bytes; BODY[] brings more than max_message_size:
    just over it (the size of what arrived is checked) or far over it plus
    headroom (the answer is cut off, the connection renewed)."""
    for i in range(1, 5):
        hostile.add(msg(i, "x" * real_size + "\r\n") if i == 2 else msg(i))
    hostile.lie_size = {2: 100}
    cfg = config(tmp_path, hostile)
    r = probe(cfg, "fetch", "1", str(100 * 1024))
    assert r.returncode == 0, r.stderr
    got = fetched(r.stdout)
    assert sorted(got) == [1, 2, 3, 4]
    assert got[2][1] is False, "the oversized message must not be handed over"
    assert got[2][0] > 100 * 1024, "its size is what arrived, not what was claimed"
    assert all(got[u][1] for u in (1, 3, 4))
    # an honest batch plus, at most, one message fetched again on its own
    assert hostile.count("UID FETCH") <= 8


def test_huge_literal_announced_is_not_allocated(hostile, tmp_path):
    for i in range(1, 4):
        hostile.add(msg(i))
    hostile.literal_claim = {2: 4000000000}
    cfg = config(tmp_path, hostile, timeout=5)
    r = probe(cfg, "fetch", "1", str(1024 * 1024), timeout=60)
    assert r.returncode == 0, r.stderr
    got = fetched(r.stdout)
    assert got[2] == (4000000000, False)
    assert got[1][1] and got[3][1]
    assert r.elapsed < 20


def test_too_large_mail_taken_before_a_broken_fetch_is_described_later(hostile, tmp_path):
    """A too-large message recorded in a batch that was committed, then the
    fetch breaks (the server stops in the middle of a later message): the
    next fetch describes it (sender and subject in the dead list)."""
    hostile.add(msg(1))
    hostile.add(msg(2, "x" * (300 * 1024)))  # over max_message_size
    for i in range(3, 106):
        hostile.add(msg(i))
    # a batch commits every 100 messages: the break comes after the first
    hostile.literal_claim = {104: len(msg(104)) + 100}
    cfg = config(tmp_path, hostile, timeout=2, gateway={"max_message_size": "200K"})
    r = run_mailfeed(cfg.path, "run", "--once", timeout=120)
    assert r.returncode == 1, r.stderr[-3000:]
    [huge] = [d for d in json.loads(run_mailfeed(cfg.path, "dead", "--json").stdout)["dead"]
              if d["uid"] == 2]
    assert "too large" in huge["reason"] and not huge.get("from"), huge
    hostile.literal_claim = {}
    r = run_mailfeed(cfg.path, "run", "--once", timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    [huge] = [d for d in json.loads(run_mailfeed(cfg.path, "dead", "--json").stdout)["dead"]
              if d["uid"] == 2]
    assert huge["from"] == "carol@example.org" and huge["subject"] == "Message 2", huge


def test_endless_response_line_ends_the_command(hostile, tmp_path):
    hostile.add(msg(1))
    hostile.huge_line = "SELECT"
    cfg = config(tmp_path, hostile, timeout=10)
    r = probe(cfg, "fetch", "1", "1000000", timeout=120)
    assert r.returncode == 1
    assert re.search(r"account alice: cannot select folder INBOX: the server sent more than "
                     r"\d+ bytes in one answer", r.stderr), r.stderr
    # cut off at max_message_size (25 MiB by default) plus headroom, not 200 MB
    assert hostile.sent_bytes < 40 * 1024 * 1024


# ------------------------------------------------------------------ time

@pytest.mark.parametrize("mode", ["silent", "drip"])
def test_slow_or_silent_server_times_out_per_command(hostile, tmp_path, mode):
    hostile.add(msg(1))
    setattr(hostile, mode, "SELECT")
    hostile.drip_delay = 0.3
    cfg = config(tmp_path, hostile, timeout=2)
    r = probe(cfg, "fetch", "1", "1000000", timeout=60)
    assert r.returncode == 1
    assert "cannot select folder INBOX" in r.stderr, r.stderr
    if mode == "drip":
        assert "did not finish its answer within" in r.stderr, r.stderr
    assert r.elapsed < 8, "a drip-feeding server must not hold a command for %.1f s" % r.elapsed


# ------------------------------------------------------------------ loops

@pytest.mark.parametrize("grow", [False, True])
def test_exists_in_every_answer_makes_no_busy_loop(hostile, tmp_path, grow):
    for i in range(1, 3):
        hostile.add(msg(i))
    hostile.exists_every_reply = True
    hostile.exists_grow = grow
    cfg = config(tmp_path, hostile)
    p = start_daemon(cfg)
    assert wait_for(lambda: hostile.count("SELECT") >= 1, 15)
    time.sleep(5)
    selects = hostile.count("SELECT")
    log = stop_daemon(p)
    # a busy loop makes hundreds; spaced wake-ups make a handful
    assert selects <= 8, "%d SELECTs in about 5 s:\n%s" % (selects, log[-2000:])


def test_uid_search_answer_is_sorted_fast(hostile, tmp_path):
    hostile.add(msg(1))
    hostile.search_extra = list(range(2, 200002))
    hostile.search_order = "reverse"
    cfg = config(tmp_path, hostile)
    r = probe(cfg, "search", "1", timeout=120)
    assert r.returncode == 0, r.stderr
    m = re.search(r"count=(\d+) first=(\d+) last=(\d+) ascending=(\d) elapsed_ms=(\d+)",
                  r.stdout)
    assert m, r.stdout
    assert m.group(1, 2, 3, 4) == ("200001", "1", "200001", "1")
    assert int(m.group(5)) < 10000


def status_json(cfg):
    r = run_mailfeed(cfg, "status", "--json")
    data = json.loads(r.stdout)
    mbs = data["mailboxes"]
    return mbs[0] if isinstance(mbs, list) else mbs["team"]


def test_last_possible_uid_is_fetched_once_and_said_in_status(hostile, tmp_path):
    hostile.add(msg(1), uid=4294967294)
    hostile.add(msg(2), uid=4294967295)
    hostile.capabilities = "IMAP4rev1 UIDPLUS MOVE"  # no IDLE: poll every second
    cfg = config(tmp_path, hostile, poll_interval="1s")
    p = start_daemon(cfg)
    assert wait_for(lambda: hostile.count("SELECT") >= 4, 20)
    bodies = sum(1 for v, a in hostile.commands if v == "UID FETCH" and "BODY" in a.upper())
    log = stop_daemon(p)
    assert bodies == 1, log[-2000:]
    st = status_json(cfg)
    assert "4294967295" in (st.get("last_error") or ""), st


def test_uidvalidity_changing_on_every_select_does_not_refetch(hostile, tmp_path):
    for i in range(1, 4):
        hostile.add(msg(i))
    hostile.uidvalidity_churn = True
    hostile.capabilities = "IMAP4rev1 UIDPLUS MOVE"
    cfg = config(tmp_path, hostile, poll_interval="1s")
    p = start_daemon(cfg)
    assert wait_for(lambda: hostile.count("SELECT") >= 4, 20)
    hostile.add(msg(4))
    n = hostile.count("SELECT")
    assert wait_for(lambda: hostile.count("SELECT") >= n + 6, 20)
    body_fetches = [a for v, a in hostile.commands if v == "UID FETCH" and "BODY" in a.upper()]
    log = stop_daemon(p)
    # the first three once (a first change of UIDVALIDITY may rescan once), the new one once
    fetched_uids = " ".join(a.split(" ")[0] for a in body_fetches)
    assert len(body_fetches) <= 3, (fetched_uids, log[-2000:])
    assert re.search(r"(^|[ ,:])4($|[ ,:])", fetched_uids), fetched_uids
    st = status_json(cfg)
    assert "new UIDVALIDITY on every SELECT" in (st.get("last_error") or ""), st


def test_capability_answer_without_data_does_not_crash(hostile, tmp_path):
    """libetpan copies a capability list that such a server never sent."""
    hostile.add(msg(1))
    hostile.capability_data = False
    cfg = config(tmp_path, hostile)
    r = probe(cfg, "fetch", "1", "100000")
    assert r.returncode == 0, r.stderr
    assert fetched(r.stdout) == {1: (len(msg(1)), True)}
    assert hostile.count("CAPABILITY") >= 1
