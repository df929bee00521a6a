"""The IMAP client against Cyrus IMAP (harness/cyrus.py), where admins met
UTF-8 folder names refused and after-actions failing: fetching without
\\Seen, IDLE wake-ups, MOVE and its COPY fallback, the after-actions, and
folder names in modified UTF-7."""
import hashlib
import os
import re
import subprocess
import threading

import pytest

from conftest import ASAN_OPTIONS, IMAPPROBE, Secret, write_config
from harness.cyrus import Cyrus

PROBE = IMAPPROBE

pytestmark = [pytest.mark.usefixtures("imapprobe"), pytest.mark.skipif(
    not Cyrus.available(),
    reason="Cyrus IMAP is not unpacked under build/cyrus (run scripts/install-deps.sh)")]


@pytest.fixture
def cyrus():
    c = Cyrus()
    yield c
    c.stop()


@pytest.fixture
def cyrus_no_move():
    c = Cyrus(capabilities_off=("MOVE",))
    yield c
    c.stop()


def msg(i):
    return ("From: Carol <carol@example.org>\r\nTo: team@example.org\r\n"
            "Subject: Message %d\r\nMessage-ID: <c%d@example.org>\r\n"
            "Date: Mon, 23 Nov 2026 07:00:00 +0000\r\n\r\nBody %d.\r\n" % (i, i, i)).encode()


def config(tmp_path, c):
    return write_config(tmp_path, None, **{
        "account alice": {"host": c.host, "port": c.port, "tls": "none", "username": c.user,
                          "password_file": Secret(c.password), "timeout": 10},
        "mailbox team": {"account": "alice", "folder": "INBOX", "group": "team"}})


def probe(cfg, folder, *args, timeout=60):
    env = dict(os.environ, ASAN_OPTIONS=ASAN_OPTIONS)
    return subprocess.run([PROBE, str(cfg), "alice", folder, *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_fetch_utf8_folder_without_setting_seen(cyrus, tmp_path):
    cyrus.create_folder("Förderung")
    raws = [msg(i) for i in range(3)]
    for raw in raws:
        cyrus.append("Förderung", raw)
    r = probe(config(tmp_path, cyrus), "Förderung", "fetch", "1", "1000000")
    assert r.returncode == 0, r.stderr
    got = {int(m.group(1)): m.group(2)
           for m in re.finditer(r"^uid=(\d+) size=\d+ date=\d+ sha256=(\w+)$", r.stdout, re.M)}
    assert got == {i + 1: hashlib.sha256(raw).hexdigest() for i, raw in enumerate(raws)}
    assert all("\\Seen" not in f for _, f in cyrus.messages("Förderung"))


def test_idle_wakes_on_new_mail(cyrus, tmp_path):
    cyrus.append("INBOX", msg(1))
    cfg = config(tmp_path, cyrus)
    threading.Timer(1.5, lambda: cyrus.append("INBOX", msg(2))).start()
    r = probe(cfg, "INBOX", "wait", "30")
    assert r.returncode == 0, r.stderr
    m = re.search(r"wait=(-?\d) idle=(\d) elapsed_ms=(\d+)", r.stdout)
    assert m, r.stdout
    assert m.group(1) == "1" and m.group(2) == "1", r.stdout
    assert int(m.group(3)) < 10000
    assert re.findall(r"^uid=(\d+)$", r.stdout, re.M) == ["1", "2"]


@pytest.mark.parametrize("server", ["cyrus", "cyrus_no_move"])
def test_move_to_utf8_folder(request, tmp_path, server):
    c = request.getfixturevalue(server)
    c.create_folder("Erledigt/März")
    for i in range(3):
        c.append("INBOX", msg(i))
    r = probe(config(tmp_path, c), "INBOX", "after", "move:Erledigt/März", "1", "3")
    assert r.returncode == 0, r.stderr
    assert [u for u, _ in c.messages("INBOX")] == [2]
    assert len(c.messages("Erledigt/März")) == 2


@pytest.mark.parametrize("action,expect", [("seen", "\\Seen"), ("delete", None)])
def test_after_actions(cyrus, tmp_path, action, expect):
    for i in range(2):
        cyrus.append("INBOX", msg(i))
    r = probe(config(tmp_path, cyrus), "INBOX", "after", action, "1")
    assert r.returncode == 0, r.stderr
    left = dict(cyrus.messages("INBOX"))
    if expect:
        assert expect in left[1] and expect not in left[2]
    else:
        assert sorted(left) == [2]


def test_move_to_missing_folder_is_refused_clearly(cyrus, tmp_path):
    cyrus.append("INBOX", msg(1))
    r = probe(config(tmp_path, cyrus), "INBOX", "after", "move:Nirgendwo", "1")
    assert r.returncode == 1
    assert "after-action move:Nirgendwo refused: the folder Nirgendwo does not exist" \
        in r.stderr, r.stderr
    assert [u for u, _ in cyrus.messages("INBOX")] == [1]
