"""A parse worker taken over by hostile mail stays in its sandbox.

libetpan has known memory-safety bugs, so the test assumes the worst: a
payload (tests/integration/sandbox_payload.c, loaded with LD_PRELOAD) stands
in for an exploit and runs inside the worker when a crafted message is
parsed, after the sandbox is set up.  It tries to read the IMAP password
file, create a file, connect to a socket, signal the daemon and run a
shell.  Every attempt fails, each such message ends on the dead list, and
the daemon goes on posting the mail around them."""
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import MAILFEED, run_mailfeed, start_daemon, stop_daemon, wait_for, write_config  # noqa: F401

HERE = Path(__file__).resolve().parent
CC = shutil.which("cc") or shutil.which("gcc")
ATTACKS = ["read-secret", "write-file", "socket", "signal-parent", "exec"]


def msg(i, subject, body):
    return ("From: Mallory <mallory@example.org>\r\nTo: team@example.org\r\n"
            "Subject: %s\r\nMessage-ID: <s%d@example.org>\r\n"
            "Date: Mon, 23 Nov 2026 08:%02d:00 +0000\r\n\r\n%s\r\n"
            % (subject, i, i, body)).encode()


def query(cfg, sql):
    if not os.path.exists(cfg.state):
        return []
    con = sqlite3.connect(cfg.state, timeout=30)
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


@pytest.fixture
def payload(tmp_path):
    if CC is None:
        pytest.skip("no C compiler")
    so = tmp_path / "payload.so"
    subprocess.run([CC, "-shared", "-fPIC", "-O1", "-o", str(so),
                    str(HERE / "sandbox_payload.c"), "-ldl"], check=True)
    return so


def test_a_taken_over_worker_cannot_reach_out(dovecot, tmp_path, payload):
    dovecot.create_folder("alice", "Team")
    raws = [msg(1, "Before", "An ordinary message.")]
    raws += [msg(2 + i, "attack " + a, "PAYLOAD:%s" % a) for i, a in enumerate(ATTACKS)]
    raws += [msg(9, "After", "Another ordinary message.")]
    for raw in raws:
        dovecot.append("alice", "Team", raw)
    cfg = write_config(tmp_path, dovecot, folder="Team", after="seen",
                       gateway={"parse_timeout": "10s", "log_level": "debug"})
    password_file = [l.split("=", 1)[1].strip() for l in Path(cfg.path).read_text().splitlines()
                     if l.startswith("password_file")][0]
    password = Path(password_file).read_text()
    drop = tmp_path / "dropped"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(0.1)
    env = {"LD_PRELOAD": str(payload), "PAYLOAD_SECRET": password_file,
           "PAYLOAD_DROP": str(drop), "PAYLOAD_PORT": str(listener.getsockname()[1]),
           # the sanitizer runtime wants to be loaded first; the payload is
           # not instrumented, so that does not matter here
           "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "detect_leaks=1:exitcode=99")
           + ":verify_asan_link_order=0"}
    p = start_daemon(cfg.path, env=env)
    try:
        assert wait_for(lambda: len(query(cfg, "SELECT id FROM local_items")) == 2, 90), \
            Path(p.log_path).read_text()[-3000:]
        assert wait_for(lambda: len(query(cfg, "SELECT id FROM messages WHERE state='dead'"))
                        == len(ATTACKS), 30)
        subjects = [s for (s,) in query(cfg, "SELECT subject FROM local_items ORDER BY id")]
        assert subjects == ["Before", "After"]
        r = run_mailfeed(cfg.path, "dead", "--json")
        assert r.returncode == 0, r.stderr
        dead = {d["subject"]: d for d in json.loads(r.stdout)["dead"]}
        assert sorted(dead) == sorted("attack " + a for a in ATTACKS), dead
        # calls the sandbox refuses softly fail, the payload gives up
        for a in ("read-secret", "write-file"):
            assert dead["attack " + a]["reason"] == "parser crashed (exit status 66)", dead
        # anything else kills the worker at once (SIGSYS)
        for a in ("socket", "signal-parent", "exec"):
            assert dead["attack " + a]["reason"] == "parser crashed (signal 31)", dead
        # nothing reached the outside
        try:
            conn, _ = listener.accept()
            conn.close()
            pytest.fail("the worker connected to a socket")
        except socket.timeout:
            pass
        assert not drop.exists()
        # and the daemon, never signalled, goes on
        assert p.poll() is None
        dovecot.append("alice", "Team", msg(10, "Later", "Still here."))
        assert wait_for(lambda: len(query(cfg, "SELECT id FROM local_items")) == 3, 30)
    finally:
        listener.close()
        log = stop_daemon(p)
    # the payload did run, and every attempt it could report was blocked
    assert "payload read-secret: blocked" in log, log[-3000:]
    assert "payload write-file: blocked" in log, log[-3000:]
    assert "SUCCEEDED" not in log, log[-3000:]
    assert password.strip() not in log
    for item in Path(cfg.feeds).rglob("*"):
        if item.is_file():
            assert password.strip() not in item.read_text(errors="replace")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the daemon as another user")
def test_the_daemon_is_not_dumpable():
    """The daemon holds passwords, tokens and keys: it turns off core dumps
    and ptrace by other processes of its user (PR_SET_DUMPABLE 0).  The
    kernel shows it by giving the process's /proc entries to root."""
    nobody = 65534
    tmp_path = Path(tempfile.mkdtemp(prefix="mf-dump-"))  # pytest's is root's alone
    cfg = write_config(tmp_path)
    os.chmod(tmp_path, 0o755)
    for path in [tmp_path, *tmp_path.rglob("*")]:
        os.chown(path, nobody, nobody)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
    p = subprocess.Popen([MAILFEED, "-c", cfg.path, "run"], user=nobody, group=nobody,
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: os.path.exists(cfg.state) or p.poll() is not None, 30)
        assert p.poll() is None, p.stderr.read()
        assert os.stat("/proc/%d/environ" % p.pid).st_uid == 0
        # a process of that user that did not ask for it is its user's
        q = subprocess.Popen(["sleep", "30"], user=nobody, group=nobody)
        try:
            assert os.stat("/proc/%d/environ" % q.pid).st_uid == nobody
        finally:
            q.kill()
            q.wait()
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(10)
        shutil.rmtree(tmp_path, ignore_errors=True)
