"""Mail that holds the parser cannot stop the gateway.

The reported attack: a few crafted mails of ~2 MB, each costing the whole
parse timeout, sent to a mapped folder.  Under the shipped unit the main loop
fed no watchdog while a batch was parsed and committed nothing before the
batch ended, so systemd killed the daemon, which restarted on the same mails,
forever.  Here the test plays systemd: it reads the daemon's sd_notify
messages and kills and restarts it (as WatchdogSec= and Restart= would) when
no WATCHDOG=1 comes within the watchdog time.  The unit's proportions are
kept (WatchdogSec=60 against the default parse_timeout of 20 s), scaled down
ten times.  The stand-in for the crafted mails is the test payload of
test_sandbox.py ("spin": a parser busy forever without a system call); the
crafted mail itself (nesting disguised with a comment) is in the same folder
and refused before it reaches the worker.

Then the daemon is killed while it parses (a crash of the daemon itself, or
`kill -9`): the message it was parsing is tried once more after the restart
and, when that ends the same way, goes to the dead list; the other messages
of its batch are posted."""
import os
import re
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import (start_daemon, state_connect, state_exists, stop_daemon, wait_for,
                      write_config)

HERE = Path(__file__).resolve().parent
UNIT = HERE.parents[1] / "systemd/mailfeed.service"
SCALE = 10
DEFAULT_PARSE_TIMEOUT = 20


def unit_watchdog_seconds():
    m = re.search(r"^WatchdogSec=(\d+)s?$", UNIT.read_text(), re.M)
    assert m, "the unit sets WatchdogSec="
    return int(m.group(1))


def msg(i, subject, body):
    return ("From: Mallory <mallory@example.org>\r\nTo: team@example.org\r\n"
            "Subject: %s\r\nMessage-ID: <p%d@example.org>\r\n"
            "Date: Mon, 23 Nov 2026 09:%02d:00 +0000\r\n\r\n%s\r\n"
            % (subject, i, i, body)).encode()


def spinner(i):
    """~2 MB that holds the parser for good."""
    filler = ("Q" * 76 + "\r\n") * (2 * 1024 * 1024 // 78)
    return msg(i, "stall %d" % i, "PAYLOAD:spin\r\n" + filler)


def disguised_nesting(i, levels=40000):
    """The crafted mail: MIME nesting written "multipart (c)/mixed", which
    the old count of "multipart/" did not see; ~2.3 MB."""
    head = ("From: Mallory <mallory@example.org>\r\nSubject: deep\r\n"
            "Message-ID: <p%d@example.org>\r\nDate: Mon, 23 Nov 2026 09:%02d:00 +0000\r\n"
            "Content-Type: multipart/mixed; boundary=0\r\n\r\n" % (i, i))
    body = "".join("--%d\r\nContent-Type:multipart (c)/mixed;boundary=%d\r\n\r\n" % (n - 1, n)
                   for n in range(1, levels))
    return (head + body).encode()


def query(cfg, sql, *args):
    if not state_exists(cfg.state):
        return []
    con = state_connect(cfg.state, timeout=30)
    try:
        return con.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def posted(cfg):
    return [s for (s,) in query(cfg, "SELECT subject FROM local_items ORDER BY id")]


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path("/proc", d, "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d))
    return out


def kill_hard(p):
    """kill -9 of the daemon and its parse worker."""
    kids = children(p.pid)
    p.kill()
    p.wait(10)
    for k in kids:
        try:
            os.kill(k, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def payload(tmp_path):
    so = tmp_path / "payload.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", str(so),
                    str(HERE / "sandbox_payload.c"), "-ldl"], check=True)
    return so


def payload_env(so, **extra):
    env = {"LD_PRELOAD": str(so),
           "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "detect_leaks=1:exitcode=99")
           + ":verify_asan_link_order=0"}
    env.update(extra)
    return env


class Systemd:
    """Plays systemd's part for one service: NOTIFY_SOCKET and WATCHDOG_USEC
    for the daemon, a kill (SIGABRT, then SIGKILL) and a restart when no
    WATCHDOG=1 came within the watchdog time."""

    def __init__(self, cfg, env, watchdog):
        self.dir = tempfile.mkdtemp(prefix="mf-wd-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.cfg, self.watchdog = cfg, watchdog
        self.env = dict(env, NOTIFY_SOCKET=self.path, WATCHDOG_USEC=str(int(watchdog * 1e6)))
        self.kills, self.max_gap, self.last = 0, 0.0, None
        self.proc = None
        self.running = True
        self.lock = threading.Lock()
        self.start()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def start(self):
        self.proc = start_daemon(self.cfg.path, env=self.env)
        self.last = time.monotonic()  # systemd starts the clock at READY; this is earlier

    def _watch(self):
        while self.running:
            try:
                data = self.sock.recv(65536).decode(errors="replace")
                if "WATCHDOG=1" in data or "READY=1" in data:
                    now = time.monotonic()
                    self.max_gap = max(self.max_gap, now - self.last)
                    self.last = now
            except socket.timeout:
                pass
            with self.lock:
                if self.running and time.monotonic() - self.last > self.watchdog:
                    self.kills += 1
                    self.proc.send_signal(signal.SIGABRT)
                    try:
                        self.proc.wait(5)
                    except subprocess.TimeoutExpired:
                        kill_hard(self.proc)
                    time.sleep(0.5)  # RestartSec=, scaled
                    self.start()

    def stop(self):
        with self.lock:
            self.running = False
        self.thread.join()
        self.sock.close()
        return stop_daemon(self.proc)


def test_mail_that_holds_the_parser_does_not_stop_the_gateway(dovecot, tmp_path, payload):
    watchdog = unit_watchdog_seconds() / SCALE
    timeout = DEFAULT_PARSE_TIMEOUT // SCALE
    stalls = 4
    # together the stalls take longer than the watchdog: the report's ratio
    assert stalls * timeout > watchdog
    dovecot.create_folder("alice", "Team")
    raws = [msg(1, "Before", "Ordinary mail.")]
    raws += [spinner(2 + i) for i in range(stalls)]
    raws += [disguised_nesting(10), msg(11, "After", "More ordinary mail.")]
    dovecot.bulk_import("alice", "Team", raws)
    cfg = write_config(tmp_path, dovecot, folder="Team", after="seen",
                       gateway={"parse_timeout": "%ds" % timeout})
    sd = Systemd(cfg, payload_env(payload), watchdog)
    try:
        assert wait_for(lambda: len(posted(cfg)) == 2, stalls * timeout + 60), \
            Path(sd.proc.log_path).read_text()[-3000:]
        assert wait_for(lambda: len(query(cfg, "SELECT id FROM messages WHERE state='dead'"))
                        == stalls + 1, 30)
        assert posted(cfg) == ["Before", "After"]
        assert sd.kills == 0, "the watchdog killed the daemon %d times" % sd.kills
        dead = dict(query(cfg, "SELECT message_id, reason FROM messages WHERE state='dead'"))
        for i in range(stalls):
            assert dead["p%d@example.org" % (2 + i)] == \
                "parser timed out after %d s" % timeout, dead
        assert "nesting deeper than" in dead["p10@example.org"], dead
        # and the gateway goes on
        dovecot.append("alice", "Team", msg(12, "Later", "Still posted."))
        assert wait_for(lambda: len(posted(cfg)) == 3, 30)
        assert sd.kills == 0
    finally:
        log = sd.stop()
    assert sd.max_gap < watchdog, sd.max_gap
    print("longest time without WATCHDOG=1: %.1f s of %.1f s" % (sd.max_gap, watchdog))
    assert "message.quarantined" in log


def attempts(cfg, mid):
    rows = query(cfg, "SELECT parse_attempts, state FROM messages WHERE message_id=?", mid)
    return rows[0] if rows else (0, None)


def test_a_message_the_daemon_dies_on_twice_alone_is_dead(dovecot, tmp_path, payload):
    dovecot.create_folder("alice", "Team")
    dovecot.bulk_import("alice", "Team", [msg(1, "Before", "Ordinary mail."),
                                          msg(2, "stall", "PAYLOAD:spin"),
                                          msg(3, "After", "More ordinary mail.")])
    cfg = write_config(tmp_path, dovecot, folder="Team", after="seen",
                       gateway={"parse_timeout": "120s"})
    env = payload_env(payload)
    stall = "p2@example.org"

    def parsing_stall(n):
        """The daemon is in its n-th parse of the stalling message."""
        def check():
            return attempts(cfg, stall) == (n, "new") and any(children(p.pid))
        return check

    p = start_daemon(cfg.path, env=env)
    assert wait_for(parsing_stall(1), 60), Path(p.log_path).read_text()[-3000:]
    time.sleep(0.5)
    kill_hard(p)
    # nothing of that batch was posted; every parse started was counted
    assert posted(cfg) == []
    p = start_daemon(cfg.path, env=env)
    # suspects go one by one: "Before" parses and goes back among the new
    # mail (cleared), the stall is tried again
    assert wait_for(parsing_stall(2), 60), Path(p.log_path).read_text()[-3000:]
    assert attempts(cfg, "p1@example.org") == (0, "new")
    assert attempts(cfg, "p3@example.org") == (1, "new")
    time.sleep(0.5)
    kill_hard(p)
    # the first death was in a batch, where any of three could have been at
    # fault; the stall has died once on its own: it gets one more chance
    p = start_daemon(cfg.path, env=env)
    assert wait_for(parsing_stall(3), 60), Path(p.log_path).read_text()[-3000:]
    time.sleep(0.5)
    kill_hard(p)
    p = start_daemon(cfg.path, env=env)
    assert wait_for(lambda: attempts(cfg, stall)[1] == "dead", 60), \
        Path(p.log_path).read_text()[-3000:]
    assert wait_for(lambda: posted(cfg) == ["Before", "After"], 60)
    reason = query(cfg, "SELECT reason FROM messages WHERE message_id=?", stall)[0][0]
    assert "the daemon stopped twice while parsing it" in reason
    stop_daemon(p)
