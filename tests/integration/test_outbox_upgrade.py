"""A state of schema version 11 (an outbox item's payload in its own row of
outbox) upgrades to version 12 (payloads in outbox_payloads) with its items:
the dead list shows the dead one's sender and subject, the waiting post and
the comment on an already delivered post are delivered with their texts and
files, and the dead one is sent again on `dead retry`.  On SQLite and, with
MAILFEED_TEST_ENGINE=postgresql, on PostgreSQL."""
import hashlib
import json
import os
import subprocess
import time

import pytest

from conftest import ENGINE, state_db, write_config

BIN = os.environ.get("MAILFEED_BIN", "./mailfeed")


def run(conf, *args):
    return subprocess.run([BIN, "-c", conf, *args], capture_output=True, text=True, timeout=120)


def payload(subject, text, email="zoe@example.org"):
    return json.dumps({"author": {"name": "Zoë Ops", "email": email, "verified": False},
                       "subject": subject, "text": text, "hashtags": ["q3"],
                       "message_id": None, "date": "2026-11-23T07:00:00Z"})


def to_version_11(con):
    """The schema as version 11 left it: the payload a column of outbox, the
    waiting items not indexed apart."""
    con.execute("DROP TABLE outbox_payloads")
    con.execute("ALTER TABLE outbox ADD COLUMN payload TEXT NOT NULL DEFAULT ''")
    con.execute("DROP INDEX outbox_waiting")
    con.execute("CREATE INDEX outbox_due ON outbox(state, next_at, kind, ext_parent, parent,"
                " sort_date)")
    if ENGINE == "postgresql":
        con.execute("UPDATE schema_versions SET version=11 WHERE name='store'")
    else:
        con.execute("PRAGMA user_version=11")


def item(con, key, kind, payload_text, state="pending", parent=None, **cols):
    names = ["key", "kind", "grp", "payload", "state", "parent", "created", "sort_date"]
    values = [key, kind, "ops", payload_text, state, parent, int(time.time()),
              "2026-11-23T07:00:00Z"]
    for k, v in cols.items():
        names.append(k)
        values.append(v)
    return con.execute("INSERT INTO outbox(%s) VALUES(%s) RETURNING id"
                       % (", ".join(names), ", ".join("?" * len(names))), values).fetchone()[0]


def test_a_version_11_state_upgrades_with_its_items(tmp_path):
    cfg = write_config(tmp_path)
    conf = str(cfg.path)
    assert run(conf, "dead").returncode == 0  # the state, at the current version
    con = state_db(cfg)
    to_version_11(con)
    now = int(time.time())
    # delivered before the upgrade: the post is at the local feed already
    con.execute("INSERT INTO local_items(id, key, grp, author_name, author_email, subject,"
                " text, hashtags, attachments, created) VALUES(1, 'k-done', 'ops', 'Zoë Ops',"
                " 'zoe@example.org', 'Budget', 'The budget.', '[]', '[]', ?)", (now,))
    done = item(con, "k-done", "post", payload("Budget", "The budget."), "delivered",
                remote_id="local-1", delivered_at=now)
    item(con, "k-reply", "comment", payload("Re: Budget", "Agreed on the budget."),
         parent=done)
    waiting = item(con, "k-new", "post", payload("Rota", "The rota for May."))
    data = b"week,who\n1,Zoe\n"
    con.execute("INSERT INTO attachments(item, filename, content_type, size, sha256, data)"
                " VALUES(?, 'rota.csv', 'text/csv', ?, ?, ?)",
                (waiting, len(data), hashlib.sha256(data).hexdigest(), data))
    dead = item(con, "k-dead", "post", payload("Minutes", "The minutes.", "dan@example.org"),
                "dead", error="local feed store error: disk full")
    con.commit()
    con.close()

    # the dead list reads the payload after the upgrade
    r = run(conf, "dead")
    assert r.returncode == 0, r.stderr
    assert "o%d" % dead in r.stdout and "Minutes" in r.stdout, r.stdout
    assert "dan@example.org" in r.stdout, r.stdout
    assert "store.migrated version=12" in r.stderr, r.stderr

    con = state_db(cfg)
    with pytest.raises(Exception):
        con.execute("SELECT payload FROM outbox").fetchall()
    rows = con.execute("SELECT o.key, t.payload FROM outbox o"
                       " JOIN outbox_payloads t ON t.item = o.id ORDER BY o.id").fetchall()
    con.close()
    assert [json.loads(p)["subject"] for _, p in rows] == ["Budget", "Re: Budget", "Rota",
                                                           "Minutes"]

    # the waiting items are delivered with their texts and files
    r = run(conf, "run", "--once")
    assert r.returncode == 0, r.stderr
    atom = (tmp_path / "feeds" / "ops.atom").read_text()
    for text in ("The budget.", "Agreed on the budget.", "The rota for May."):
        assert text in atom, atom
    assert (tmp_path / "feeds" / "ops.files" / "rota.csv").read_bytes() == data
    assert "The minutes." not in atom

    # the dead one, sent again
    r = run(conf, "dead", "retry", "o%d" % dead)
    assert r.returncode == 0, r.stderr
    r = run(conf, "run", "--once")
    assert r.returncode == 0, r.stderr
    assert "The minutes." in (tmp_path / "feeds" / "ops.atom").read_text()
    con = state_db(cfg)
    states = dict(con.execute("SELECT key, state FROM outbox").fetchall())
    con.close()
    assert states == {"k-done": "delivered", "k-reply": "delivered", "k-new": "delivered",
                      "k-dead": "delivered"}
    r = run(conf, "dead")
    assert r.returncode == 0 and "o%d" % dead not in r.stdout, r.stdout
