"""The webhook backend and `mailfeed dead`, through the real binary.

A webhook receiver double (doubles/webhook_double.py) runs on a random
loopback port and recomputes the HMAC of every request.  Items are put in
the outbox of a fresh state database; `mailfeed run --once` delivers them:
a 503 is retried on the next pass, a 400 sends the comment to the dead
list, `mailfeed dead retry` brings it back and the next pass delivers it
under the post's receiver id.  The dead list also shows messages skipped
before they became items, and retry/drop act on them.
"""

import base64
import json
import os
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
DOUBLE = os.path.join(HERE, "doubles", "webhook_double.py")
sys.path.insert(0, os.path.join(HERE, "doubles"))
from webhook_double import REPLAY_WINDOW, verify_timed  # noqa: E402
from conftest import state_connect, state_target  # noqa: E402

BIN = os.environ.get("MAILFEED_BIN", "/work/main/build/asan/mailfeed")


def mailfeed(conf, *args, check=None):
    p = subprocess.run([BIN, "-c", conf, *args], capture_output=True, text=True, timeout=120)
    if check is not None:
        assert p.returncode == check, p.stdout + p.stderr
    return p


class Receiver:
    def __init__(self, tmp, secret, script):
        self.log = os.path.join(tmp, "requests.jsonl")
        self.proc = subprocess.Popen(
            [sys.executable, DOUBLE, "--secret", secret, "--log", self.log, "--script", script],
            stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("PORT "), line
        self.port = int(line.split()[1])

    def requests(self):
        if not os.path.exists(self.log):
            return []
        with open(self.log, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.proc.stdout.close()


@pytest.fixture
def env(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(os.urandom(32))
    secret.chmod(0o600)
    rx = Receiver(str(tmp_path), str(secret), "503,200,400")
    conf = tmp_path / "mailfeed.conf"
    state = state_target(tmp_path)
    conf.write_text(
        "[gateway]\n"
        f"state = {state}\n"
        "reply_address = feed@example.org\n"
        f"secret_file = {secret}\n\n"
        "[feed]\n"
        "backend = webhook\n"
        f"url = http://127.0.0.1:{rx.port}/hook\n"
        f"secret_file = {secret}\n"
        "timeout = 10s\n")
    # creates and migrates the state database
    out = mailfeed(str(conf), "dead", check=0)
    assert "The dead list is empty." in out.stdout
    yield str(conf), str(state), rx
    rx.stop()


def payload(subject, text, email="alice@example.org"):
    return json.dumps({"author": {"name": "Alice", "email": email}, "subject": subject,
                       "text": text, "hashtags": ["fundraising", "q3"],
                       "message_id": "a1@example.org", "date": "2026-11-23T07:00:00Z"})


def add_message(db, state, reason, subject, uid):
    cur = db.execute(
        "INSERT INTO messages(mailbox, uidvalidity, uid, size, sha256, state, reason,"
        " received_at) VALUES('fundraising', 1, ?, 10, 'h', ?, ?, ?)",
        (uid, state, reason, int(time.time())))
    db.execute("INSERT INTO message_bodies(message, raw) VALUES(?, 'raw')", (cur.lastrowid,))
    db.execute("INSERT INTO message_parsed(message, parsed) VALUES(?, ?)",
               (cur.lastrowid,
                json.dumps({"subject": subject, "from": {"email": "bob@example.org"}})))
    return cur.lastrowid


def outbox_state(state):
    with state_connect(state) as db:
        return {k: (s, r, e) for k, s, r, e in
                db.execute("SELECT key, state, remote_id, error FROM outbox")}


def test_webhook_delivery_retry_dead_and_retry_again(env):
    conf, state, rx = env
    with state_connect(state) as db:
        now = int(time.time())
        db.execute("INSERT INTO outbox(id, key, message, kind, grp, created)"
                   " VALUES(1, 'key-post', NULL, 'post', 'G1', ?)", (now,))
        db.execute("INSERT INTO outbox(id, key, message, kind, grp, parent, created)"
                   " VALUES(2, 'key-comment', NULL, 'comment', 'G1', 1, ?)", (now,))
        db.execute("INSERT INTO outbox_payloads(item, payload) VALUES(1, ?), (2, ?)",
                   (payload("Q3 appeal", "Let us plan."), payload("Re: Q3 appeal", "Agreed.")))
        db.execute("INSERT INTO attachments(item, filename, content_type, size, sha256, data)"
                   " VALUES(1, 'plan.pdf', 'application/pdf', 6, 'x', ?)", (b"%PDF-1",))

    # pass 1: 503, the post waits for its retry; nothing failed for good
    p = mailfeed(conf, "run", "--once", check=0)
    assert outbox_state(state)["key-post"][0] == "retrying"
    assert "HTTP 503" in outbox_state(state)["key-post"][2]
    with state_connect(state) as db:
        db.execute("UPDATE outbox SET next_at=0")

    # pass 2: the post is accepted, the comment refused with 400 -> exit 1
    p = mailfeed(conf, "run", "--once")
    assert p.returncode == 1, p.stderr
    st = outbox_state(state)
    assert st["key-post"][:2] == ("delivered", "wh-1")
    assert st["key-comment"][0] == "dead"
    assert "HTTP 400" in st["key-comment"][2] and "\n" not in st["key-comment"][2]

    listed = mailfeed(conf, "dead", "--json", check=0)
    dead = json.loads(listed.stdout)["dead"]
    assert [d["id"] for d in dead] == ["o2"]
    assert dead[0]["subject"] == "Re: Q3 appeal"
    assert dead[0]["from"] == "alice@example.org"
    assert "group archived" in dead[0]["reason"]
    text = mailfeed(conf, "dead", "list", check=0).stdout
    assert "o2" in text and "HTTP 400" in text

    # pass 3: retried by hand, delivered under the post's receiver id
    mailfeed(conf, "dead", "retry", "o2", check=0)
    mailfeed(conf, "run", "--once", check=0)
    assert outbox_state(state)["key-comment"][:2] == ("delivered", "wh-2")
    assert "The dead list is empty." in mailfeed(conf, "dead", check=0).stdout

    reqs = rx.requests()
    assert [r["delivery"] for r in reqs] == ["key-post", "key-post", "key-comment",
                                             "key-comment"]
    assert all(r["signature_ok"] for r in reqs)
    assert all(r["content_type"] == "application/json" for r in reqs)
    post, comment = reqs[1]["body"], reqs[3]["body"]
    assert post["type"] == "post" and post["parent"] is None
    assert post["key"] == "key-post" and post["group"] == "G1"
    # "verified": the mail server vouched for the sender (none did here)
    assert post["author"] == {"name": "Alice", "email": "alice@example.org", "verified": False}
    assert post["hashtags"] == ["fundraising", "q3"]
    assert post["date"] == "2026-11-23T07:00:00Z"
    assert post["attachments"][0]["filename"] == "plan.pdf"
    assert post["attachments"][0]["data"] == "JVBERi0x"
    assert comment["type"] == "comment" and comment["parent"] == "wh-1"


def test_dead_lists_skipped_messages_and_acts_on_them(env):
    conf, state, _ = env
    with state_connect(state) as db:
        m1 = add_message(db, "skipped", "sender not allowed: bob@example.org",
                         "Hello\x1b[31m red", 1)
        m2 = add_message(db, "dead", "parser crashed (signal 11)", "Boom", 2)
        add_message(db, "delivered", None, "Fine", 3)

    out = mailfeed(conf, "dead", check=0).stdout
    assert f"m{m1}" in out and f"m{m2}" in out
    assert "sender not allowed: bob@example.org" in out
    assert "parser crashed" in out
    assert "\x1b" not in out and "Hello?[31m red" in out
    assert "Fine" not in out

    assert mailfeed(conf, "dead", "retry", "m999").returncode == 2
    assert mailfeed(conf, "dead", "drop", "o7").returncode == 2
    assert mailfeed(conf, "dead", "frobnicate").returncode == 2
    assert mailfeed(conf, "dead", "retry").returncode == 2

    p = mailfeed(conf, "dead", "retry", f"m{m1}", check=0)
    assert "skipped again unless the config changed" in p.stdout
    mailfeed(conf, "dead", "drop", f"m{m2}", check=0)
    with state_connect(state) as db:
        states = [s for (s,) in db.execute("SELECT state FROM messages ORDER BY id")]
    assert states == ["new", "dropped", "delivered"]
    dead = json.loads(mailfeed(conf, "dead", "--json", check=0).stdout)["dead"]
    assert dead == []


def test_webhook_signature_binds_time_and_delivery(env, tmp_path):
    """A captured request cannot be replayed later, nor its body passed off
    under another delivery key or a fresh timestamp."""
    conf, state, rx = env
    with state_connect(state) as db:
        now = int(time.time())
        for key in ("key-a", "key-b"):
            item = db.execute("INSERT INTO outbox(key, message, kind, grp, created)"
                              " VALUES(?, NULL, 'post', 'G1', ?) RETURNING id",
                              (key, now)).fetchone()[0]
            db.execute("INSERT INTO outbox_payloads(item, payload) VALUES(?, ?)",
                       (item, payload("Q3 " + key, "Plan " + key)))
    mailfeed(conf, "run", "--once")  # one 503, one 200
    with state_connect(state) as db:
        db.execute("UPDATE outbox SET next_at=0")
    mailfeed(conf, "run", "--once")
    reqs = rx.requests()
    assert len(reqs) >= 3
    # every attempt, retries included, carries a timed signature that checks out
    assert all(r["timed_ok"] and r["signature_ok"] for r in reqs), reqs
    secret = (tmp_path / "secret").read_bytes()
    r = reqs[-1]
    body = base64.b64decode(r["raw"])
    ts = int(r["timestamp"])
    assert abs(ts - time.time()) < 120
    assert verify_timed(secret, r["timestamp"], r["delivery"], r["signature_v2"], body, ts + 1)
    # replayed after the window
    assert not verify_timed(secret, r["timestamp"], r["delivery"], r["signature_v2"], body,
                            ts + REPLAY_WINDOW + 1)
    # the same signature with a fresh timestamp
    assert not verify_timed(secret, str(ts + REPLAY_WINDOW), r["delivery"], r["signature_v2"],
                            body, ts + REPLAY_WINDOW)
    # one item's body and signature under the other item's delivery key
    other = next(x["delivery"] for x in reqs if x["delivery"] != r["delivery"])
    assert not verify_timed(secret, r["timestamp"], other, r["signature_v2"], body, ts)
