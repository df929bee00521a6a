"""`mailfeed inspect --json` on broken mail: every recovery the MIME layer
makes is shown in "warnings", and the text is what a person wrote — for
each class of the crafted corpus (tests/corpus/mime-crafted), through the
sandboxed parse worker as the daemon runs it."""
import glob
import json
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("MAILFEED_BIN", os.path.join(ROOT, "build/asan/mailfeed"))
CRAFTED = os.path.join(ROOT, "tests/corpus/mime-crafted")


def inspect_json(tmp_path, path=None, stdin=None):
    args = [BIN, "-c", str(tmp_path / "absent.conf"), "inspect", "--json", path or "-"]
    r = subprocess.run(args, input=stdin, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return json.loads(r.stdout)


def expectations(eml):
    with open(eml[:-4] + ".expect", encoding="utf-8") as f:
        return [l.rstrip("\n").split(": ", 1) for l in f if ": " in l]


@pytest.fixture(autouse=True)
def need_binary():
    if not os.access(BIN, os.X_OK):
        pytest.skip("mailfeed binary not built: " + BIN)


CASES = sorted(glob.glob(os.path.join(CRAFTED, "*.eml")))


@pytest.mark.parametrize("eml", CASES, ids=[os.path.basename(c)[:-4] for c in CASES])
def test_crafted_case_through_inspect(tmp_path, eml):
    o = inspect_json(tmp_path, eml)
    for key, value in expectations(eml):
        if key == "warning":
            assert value.lower() in (o["warnings"] or "").lower(), o["warnings"]
        elif key == "text-has":
            assert value in o["text"]
        elif key == "text-lacks":
            assert value not in o["text"]
        elif key == "subject":
            assert o["subject"] == value
        elif key == "from":
            assert o["from"]["email"] == value
        elif key == "attachments":
            assert len(o["attachments"]) == int(value)


def test_mbox_from_line_on_stdin(tmp_path):
    raw = (b"From someone@example.org Mon Mar  2 10:00:00 2026\n"
           b"From: Ann <ann@example.org>\nSubject: exported\n"
           b"Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n"
           b"VGhlIGV4cG9ydGVkIHRleHQu\n")
    o = inspect_json(tmp_path, stdin=raw)
    assert o["subject"] == "exported"
    assert o["text"] == "The exported text."
    assert "mbox" in o["warnings"]


def test_clean_mail_has_no_warnings(tmp_path):
    raw = (b"From: Ann <ann@example.org>\nSubject: fine\nMIME-Version: 1.0\n"
           b"Content-Type: multipart/alternative; boundary=b\n\n--b\n"
           b"Content-Type: text/plain; charset=utf-8\n\nAll good.\n--b\n"
           b"Content-Type: text/html; charset=utf-8\n\n<p>All good.</p>\n--b--\n")
    o = inspect_json(tmp_path, stdin=raw)
    assert o["text"] == "All good."
    assert o["warnings"] is None
