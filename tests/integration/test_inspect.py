"""`mailfeed inspect`: what a user sees for one message, through the
sandboxed parse worker (so a message that crashes the parser is reported,
not fatal)."""
import json
import os
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("MAILFEED_BIN", os.path.join(ROOT, "build/asan/mailfeed"))
FIX = os.path.join(ROOT, "tests/fixtures/mime")


def inspect(tmp_path, *args, stdin=None, timeout=60):
    env = dict(os.environ)
    # the crash test's child prints an ASan report on purpose; keep exit codes plain
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    return subprocess.run(
        [BIN, "-c", str(tmp_path / "absent.conf"), "inspect", *args],
        input=stdin, capture_output=True, timeout=timeout, env=env)


@pytest.fixture(autouse=True)
def need_binary():
    if not os.access(BIN, os.X_OK):
        pytest.skip("mailfeed binary not built: " + BIN)


def test_json_reply(tmp_path):
    r = inspect(tmp_path, os.path.join(FIX, "human_reply.eml"), "--json")
    assert r.returncode == 0, r.stderr
    o = json.loads(r.stdout)
    assert o["subject"] == "Re: Budget #q3"
    assert o["from"] == {"name": "Ida Example", "email": "ida@example.org"}
    assert o["text"].startswith("Looks good. #approved")
    assert "Please review the budget." in o["removed"]
    assert "Please review" not in o["text"]
    assert "approved" in o["hashtags"]
    assert o["in_reply_to"] == "p1@example.org"
    assert o["references"] == ["p1@example.org"]
    assert o["classification"] == "post"
    assert o["reason"] is None
    assert "data" not in json.dumps(o["attachments"])


def test_human_output(tmp_path):
    r = inspect(tmp_path, os.path.join(FIX, "human_reply.eml"))
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "Subject: Re: Budget #q3" in out
    assert "From: Ida Example <ida@example.org>" in out
    assert "In-Reply-To: p1@example.org" in out
    assert "Part: text/plain" in out
    assert "Classification: post (no mailbox: threads not looked up)" in out
    text = out.split("--- text ---\n", 1)[1].split("--- removed ---", 1)
    assert "Looks good." in text[0]
    assert "> Please review the budget." in text[1]


@pytest.mark.parametrize("name,reason", [
    ("auto_submitted.eml", "auto-reply: Auto-Submitted: auto-replied"),
    ("bounce_dsn.eml", "bounce: multipart/report"),
    ("bulk.eml", "bulk: Precedence: bulk"),
    ("own_loop.eml", "loop: mail sent by mailfeed"),
])
def test_skipped(tmp_path, name, reason):
    r = inspect(tmp_path, os.path.join(FIX, name), "--json")
    o = json.loads(r.stdout)
    assert o["classification"] == "skipped"
    assert o["reason"].startswith(reason)
    r = inspect(tmp_path, os.path.join(FIX, name))
    assert "Classification: skipped: " + reason in r.stdout.decode()


def test_stdin(tmp_path):
    raw = (b"From: =?utf-8?Q?Z=C3=B6e?= <ZOE@example.org>\nSubject: =?iso-8859-1?Q?caf=E9?=\n"
           b"Content-Type: text/html; charset=utf-8\n\n<p>Hello <b>team</b></p>"
           b"<blockquote>old</blockquote>\n")
    r = inspect(tmp_path, "-", "--json", stdin=raw)
    o = json.loads(r.stdout)
    assert o["subject"] == "café"
    assert o["from"] == {"name": "Zöe", "email": "zoe@example.org"}
    assert o["part"] == "text/html"
    assert o["text"] == "Hello team"
    assert "old" in o["removed"]


def test_boundary_of_one_quote_is_read_safely(tmp_path):
    # a quoted boundary of one escaped quote once crashed the MIME parser;
    # a crash is still reported as poison (tests/unit/test_worker.c)
    odd = tmp_path / "odd.eml"
    odd.write_bytes(b'From: x@example.org\nSubject: boom\n'
                    b'Content-Type: multipart/mixed; boundary="\\""\n\nx\n')
    r = inspect(tmp_path, str(odd), "--json")
    assert r.returncode == 0
    o = json.loads(r.stdout)
    assert not (o.get("reason") or "").startswith("parser crashed")
    assert o["subject"] == "boom"
    # the next message is fine
    r = inspect(tmp_path, os.path.join(FIX, "human_reply.eml"), "--json")
    assert json.loads(r.stdout)["classification"] == "post"


def test_deep_nesting_never_hangs(tmp_path):
    deep = tmp_path / "deep.eml"
    parts = ["From: a@example.org\nSubject: deep\n"
             "Content-Type: multipart/mixed; boundary=b0\n\n"]
    for i in range(1, 20000):
        parts.append("--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n" % (i - 1, i))
    parts.append("--b19999\nContent-Type: text/plain\n\nbottom\n")
    deep.write_text("".join(parts))
    t0 = time.monotonic()
    r = inspect(tmp_path, str(deep), "--json", timeout=40)
    assert time.monotonic() - t0 < 30
    o = json.loads(r.stdout)
    assert o["classification"] in ("skipped", "post")


def test_missing_file(tmp_path):
    r = inspect(tmp_path, str(tmp_path / "nope.eml"))
    assert r.returncode == 1
    assert b"cannot open" in r.stderr
