"""The built-in local feed, through the real binary: items in the outbox are
delivered by `mailfeed run --once` into <dir>/<group>.atom and .txt; the Atom
file must parse as XML (RFC 4287, comments as RFC 4685 replies) whatever the
mail contained, and a second pass must not duplicate anything.  The state
is SQLite or PostgreSQL (MAILFEED_TEST_ENGINE)."""

import json
import os
import subprocess
import time
import xml.etree.ElementTree as ET

from conftest import state_db, write_config

BIN = os.environ.get("MAILFEED_BIN", "/work/main/build/asan/mailfeed")
ATOM = "{http://www.w3.org/2005/Atom}"
THR = "{http://purl.org/syndication/thread/1.0}"


def run(conf, *args):
    return subprocess.run([BIN, "-c", conf, *args], capture_output=True, text=True, timeout=120)


def payload(subject, text, tags):
    return json.dumps({"author": {"name": "Zoë <Ops>", "email": "zoe@example.org"},
                       "subject": subject, "text": text, "hashtags": tags,
                       "message_id": None, "date": "2026-11-23T07:00:00Z"})


def test_local_feed_files(tmp_path):
    cfg = write_config(tmp_path)
    feeds = tmp_path / "feeds"
    conf = cfg.path
    assert run(str(conf), "dead").returncode == 0
    db = state_db(cfg)
    now = int(time.time())
    post = db.execute("INSERT INTO outbox(key, kind, grp, created)"
                      " VALUES('k1', 'post', 'ops', ?) RETURNING id", (now,)).fetchone()[0]
    db.execute("INSERT INTO outbox_payloads(item, payload) VALUES(?, ?)",
               (post, payload("Budget & <plan>", "Line one\x07\nsee ]]> and &amp;",
                              ["fundraising", "q3"])))
    comment = db.execute("INSERT INTO outbox(key, kind, grp, parent, created)"
                         " VALUES('k2', 'comment', 'ops', ?, ?) RETURNING id",
                         (post, now)).fetchone()[0]
    db.execute("INSERT INTO outbox_payloads(item, payload) VALUES(?, ?)",
               (comment, payload("Re: Budget", "Agreed.", [])))
    db.commit()
    db.close()

    for _ in range(2):
        p = run(str(conf), "run", "--once")
        assert p.returncode == 0, p.stderr
    assert oct(os.stat(feeds).st_mode & 0o777) == "0o750"

    root = ET.parse(feeds / "ops.atom").getroot()
    assert root.tag == ATOM + "feed"
    assert root.find(ATOM + "title").text == "ops"
    assert root.find(ATOM + "updated").text.endswith("Z")
    entries = root.findall(ATOM + "entry")
    assert len(entries) == 2
    by_title = {e.find(ATOM + "title").text: e for e in entries}
    post, comment = by_title["Budget & <plan>"], by_title["Re: Budget"]
    assert post.find(ATOM + "content").text == "Line one\ufffd\nsee ]]> and &amp;"
    assert post.find(ATOM + "author/" + ATOM + "name").text == "Zoë <Ops>"
    assert post.find(ATOM + "author/" + ATOM + "email").text == "zoe@example.org"
    assert [c.get("term") for c in post.findall(ATOM + "category")] == ["fundraising", "q3"]
    assert post.find(THR + "in-reply-to") is None
    reply = comment.find(THR + "in-reply-to")
    assert reply.get("ref") == post.find(ATOM + "id").text

    txt = (feeds / "ops.txt").read_text(encoding="utf-8")
    assert "== Budget & <plan>" in txt
    assert "tags: #fundraising #q3" in txt
    assert "\n      -> Zoë <Ops> <zoe@example.org>" in txt
    assert "         Agreed." in txt
    assert "\x07" not in txt

    db = state_db(cfg)
    assert db.execute("SELECT COUNT(*) FROM local_items").fetchone()[0] == 2
    assert [r[0] for r in db.execute("SELECT remote_id FROM outbox ORDER BY id")] == \
        ["local-1", "local-2"]
    db.close()
