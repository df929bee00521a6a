"""Several instances deliver one outbox kept in PostgreSQL: each item is
claimed by one instance at a time, so three processes delivering one backlog
at once post every item exactly once, share the work, and keep a thread in
order (the post first, its comments in date order); an instance killed with
SIGKILL in the middle of its deliveries leaves its items to the others, which
look for each at the service before sending it, so none is posted twice.

The backlog is written straight into the state (as the pipeline would leave
it); the delivering processes are `mailfeed run --once` with no mailbox, so
they only deliver.  The feed service is the Mattermost double, paced so that
a delivery takes a moment."""
import collections
import json
import os
import re
import signal
import subprocess
import time
import urllib.request

import pytest

from conftest import Secret, daemon_log, start_daemon, state_db, wait_for, write_config

HERE = os.path.dirname(os.path.abspath(__file__))
DOUBLE = os.path.join(HERE, "doubles", "mattermost_double.py")
CHANNEL = "4xp9fdt77pncbef59f4k1qe83o"
TOKEN = "xq7k3m9p2w8r4t6y1u5i0o3a7s"


class Double:
    def __init__(self):
        self.proc = subprocess.Popen(["/usr/bin/python3", DOUBLE, "--token", TOKEN],
                                     stdout=subprocess.PIPE, text=True)
        self.base = "http://127.0.0.1:%d" % int(self.proc.stdout.readline())

    def control(self, **c):
        req = urllib.request.Request(self.base + "/__control", data=json.dumps(c).encode(),
                                     method="POST")
        urllib.request.urlopen(req).read()

    def posts(self):
        state = json.loads(urllib.request.urlopen(self.base + "/__state").read())
        return sorted(state["posts"], key=lambda p: (p["create_at"], p["id"]))

    def close(self):
        self.proc.terminate()
        self.proc.wait()


@pytest.fixture
def mm():
    d = Double()
    yield d
    d.close()


def payload(subject, text, date):
    return json.dumps({"author": {"name": "Alice Example", "email": "alice@example.org",
                                  "verified": False},
                       "subject": subject, "text": text, "hashtags": [],
                       "message_id": None, "date": date})


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def backlog(cfg, posts, comments_per_post=0, threads=0):
    """posts posts; the first `threads` of them get comments_per_post comments
    each, enqueued newest first (the outbox must still send them oldest
    first).  Returns the keys, and the comment keys per thread in date order."""
    con = state_db(cfg)
    now = int(time.time())
    keys, thread_order = [], {}
    for i in range(posts):
        key = "p%04d" % i
        date = iso(1790000000 + i)
        row = con.execute("INSERT INTO outbox(key, kind, grp, created, sort_date)"
                          " VALUES(?, 'post', ?, ?, ?) RETURNING id",
                          (key, CHANNEL, now, date)).fetchone()
        con.execute("INSERT INTO outbox_payloads(item, payload) VALUES(?, ?)",
                    (row[0], payload("Topic %d" % i, "Post %d." % i, date)))
        keys.append(key)
        if i < threads:
            order = []
            for j in reversed(range(comments_per_post)):
                ckey = "c%04d-%d" % (i, j)
                cdate = iso(1790100000 + 60 * j)
                crow = con.execute("INSERT INTO outbox(key, kind, grp, parent, created,"
                                   " sort_date) VALUES(?, 'comment', ?, ?, ?, ?) RETURNING id",
                                   (ckey, CHANNEL, row[0], now, cdate)).fetchone()
                con.execute("INSERT INTO outbox_payloads(item, payload) VALUES(?, ?)",
                            (crow[0], payload("Re: Topic %d" % i, "Reply %d." % j, cdate)))
                keys.append(ckey)
                order.insert(0, ckey)
            thread_order[key] = order
    con.commit()
    con.close()
    return keys, thread_order


def config(tmp_path, pg, mm, **feed):
    f = {"backend": "mattermost", "url": mm.base, "token_file": Secret(TOKEN),
         "concurrency": 2}
    f.update(feed)
    cfg = write_config(tmp_path, None, gateway={"state": pg.dsn}, feed=f)
    cfg.state = pg.dsn
    # creates the schema
    r = subprocess.run([os.environ.get("MAILFEED_BIN", "build/asan/mailfeed"), "-c", cfg.path,
                        "dead"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return cfg


def delivered_by(log):
    return re.findall(r"outbox\.delivered key=(\S+)", log)


def outbox_states(cfg):
    con = state_db(cfg)
    rows = con.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall()
    claims = con.execute("SELECT COUNT(*) FROM outbox WHERE claimed_by IS NOT NULL").fetchone()
    con.close()
    return {r[0]: r[1] for r in rows}, claims[0]


def check_threads(posts, thread_order):
    by_key = {p["props"].get("mailfeed_key"): p for p in posts}
    for post_key, order in thread_order.items():
        root = by_key[post_key]
        got = [p["props"]["mailfeed_key"] for p in posts if p["root_id"] == root["id"]]
        assert got == order, (post_key, got)
        assert all(by_key[k]["create_at"] >= root["create_at"] for k in order)


def test_three_instances_deliver_each_item_once(tmp_path, postgres, mm):
    cfg = config(tmp_path, postgres, mm)
    keys, threads = backlog(cfg, 150, comments_per_post=3, threads=20)
    # a few seconds of work, so that every instance is up before it is done
    mm.control(pace=0.03)
    procs = [start_daemon(cfg.path, "--once") for _ in range(3)]
    for p in procs:
        assert p.wait(timeout=240) == 0, daemon_log(p)[-3000:]
    logs = [daemon_log(p) for p in procs]
    for log in logs:
        assert "ERROR: AddressSanitizer" not in log and "runtime error" not in log, log[-3000:]

    posts = mm.posts()
    seen = collections.Counter(p["props"].get("mailfeed_key") for p in posts)
    assert sorted(seen) == sorted(keys)
    assert [k for k, n in seen.items() if n > 1] == []
    check_threads(posts, threads)
    # the work was shared, and each item was delivered by one instance
    shares = [delivered_by(log) for log in logs]
    assert all(len(s) > 0 for s in shares), [len(s) for s in shares]
    assert sorted(sum(shares, [])) == sorted(keys)
    assert outbox_states(cfg) == ({"delivered": len(keys)}, 0)


def holders(cfg):
    """pid -> claims held, of the items being delivered."""
    con = state_db(cfg)
    rows = con.execute("SELECT claimed_by, COUNT(*) FROM outbox WHERE state='inflight'"
                       " GROUP BY claimed_by").fetchall()
    con.close()
    out = {}
    for who, n in rows:
        m = re.match(r"[^:]+:(\d+)", who or "")
        if m:
            out[int(m.group(1))] = n
    return out


def test_killed_instance_items_go_out_once_through_the_others(tmp_path, postgres, mm):
    cfg = config(tmp_path, postgres, mm, claim_timeout="3s")
    keys, threads = backlog(cfg, 150, comments_per_post=2, threads=10)
    mm.control(pace=0.03)
    procs = [start_daemon(cfg.path, "--once") for _ in range(3)]
    pids = {p.pid: p for p in procs}
    # one that holds claims, once the delivery is under way
    victim = None

    def pick():
        nonlocal victim
        if len(mm.posts()) < 20:
            return False
        held = [pid for pid, n in holders(cfg).items() if pid in pids and n > 0]
        victim = pids[held[0]] if held else None
        return victim is not None

    assert wait_for(pick, 60, step=0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    others = [p for p in procs if p is not victim]
    for p in others:
        assert p.wait(timeout=240) == 0, daemon_log(p)[-3000:]
    # what the others left (a claim they saw lapse after they stopped) is
    # done by the next pass of any instance
    for _ in range(3):
        if outbox_states(cfg)[0].get("delivered") == len(keys):
            break
        time.sleep(3.5)
        p = start_daemon(cfg.path, "--once")
        assert p.wait(timeout=120) == 0, daemon_log(p)[-3000:]
        others.append(p)

    posts = mm.posts()
    seen = collections.Counter(p["props"].get("mailfeed_key") for p in posts)
    assert sorted(seen) == sorted(keys)
    assert [k for k, n in seen.items() if n > 1] == []
    check_threads(posts, threads)
    assert outbox_states(cfg) == ({"delivered": len(keys)}, 0)
    logs = "".join(daemon_log(p) for p in others)
    # the killed instance's items were looked for before being sent again
    assert "outbox.reconciled" in logs
    assert "ERROR: AddressSanitizer" not in logs


def test_dead_list_retry_and_drop_on_postgresql(tmp_path, postgres, mm):
    """The dead list reads its senders and subjects from the stored JSON and
    from a never-parsed mail's raw header block (bytes) on PostgreSQL too;
    retry and drop change the items there."""
    cfg = config(tmp_path, postgres, mm)
    con = state_db(cfg)
    now = int(time.time())
    # an item the service refused (as the delivery records it)
    bad = con.execute("INSERT INTO outbox(key, kind, grp, created, sort_date, state,"
                      " error) VALUES('bad', 'post', 'zzzzzzzzzzzzzzzzzzzzzzzzzz', ?, '',"
                      " 'dead', 'mattermost post: HTTP 403') RETURNING id", (now,)).fetchone()
    con.execute("INSERT INTO outbox_payloads(item, payload) VALUES(?, ?)",
                (bad[0], payload("Budget 2027", "Figures.", iso(now))))
    row = con.execute("INSERT INTO messages(mailbox, uidvalidity, uid, size, sha256, state,"
                      " reason, received_at) VALUES('team', 1, 7, 10, 'x', 'skipped',"
                      " 'parser crashed', ?) RETURNING id", (now,)).fetchone()
    con.execute("INSERT INTO message_bodies(message, raw) VALUES(?, ?)",
                (row[0], b"From: Dan <dan@example.org>\r\nSubject: Minutes\r\n\r\nx"))
    con.close()

    def mailfeed(*args):
        out = subprocess.run([os.environ.get("MAILFEED_BIN", "build/asan/mailfeed"), "-c",
                              cfg.path, *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    listed = mailfeed("dead", "list")
    assert "alice@example.org" in listed and "Budget 2027" in listed
    assert "dan@example.org" in listed and "Minutes" in listed
    item = re.search(r"\bo(\d+)\b", listed).group(1)
    mailfeed("dead", "retry", "o" + item)
    assert outbox_states(cfg)[0] == {"pending": 1}
    mm.control(channels={"zzzzzzzzzzzzzzzzzzzzzzzzzz": "budget"})
    mailfeed("run", "--once")
    assert outbox_states(cfg) == ({"delivered": 1}, 0)
    assert [p["props"]["mailfeed_key"] for p in mm.posts()] == ["bad"]
    mailfeed("dead", "drop", re.search(r"\bm\d+\b", listed).group(0))
    assert "Minutes" not in mailfeed("dead", "list")
