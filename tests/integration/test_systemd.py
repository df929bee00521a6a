"""mailfeed under systemd, without a running systemd: the shipped unit file
passes `systemd-analyze verify` and keeps a low `security` exposure, and
`mailfeed run` speaks the sd_notify protocol (READY, WATCHDOG, STATUS,
RELOADING, STOPPING) on a NOTIFY_SOCKET the test owns."""
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("MAILFEED_BIN", str(ROOT / "build/asan/mailfeed"))
UNIT = ROOT / "systemd/mailfeed.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None,
                                   reason="systemd-analyze missing (Debian package systemd)")
MAX_EXPOSURE = 2.0


@pytest.fixture
def unit(tmp_path):
    """The unit as `make install` writes it, pointing at the binary under test,
    with the man pages it names findable through MANPATH."""
    text = UNIT.read_text().replace("@SBINDIR@/mailfeed", BIN)
    assert "@SBINDIR@" not in text
    path = tmp_path / "mailfeed.service"
    path.write_text(text)
    for sect, page in (("man8", "mailfeed.8"), ("man5", "mailfeed.conf.5")):
        (tmp_path / "man" / sect).mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "man" / page, tmp_path / "man" / sect / page)
    return path


def analyze(*args, cwd=None):
    env = dict(os.environ, MANPATH=str(Path(cwd) / "man"), SYSTEMD_COLORS="0",
               SYSTEMD_PAGER="")
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=cwd)


@needs_analyze
def test_unit_verifies(unit):
    r = analyze("verify", str(unit), cwd=unit.parent)
    assert r.returncode == 0, r.stderr
    assert "mailfeed.service" not in r.stderr, r.stderr


@needs_analyze
def test_unit_verify_catches_a_broken_unit(unit):
    """The check above can fail: a unit whose binary is missing is refused."""
    unit.write_text(unit.read_text().replace(BIN, str(unit.parent / "no-such-binary")))
    r = analyze("verify", str(unit), cwd=unit.parent)
    assert r.returncode != 0
    assert "no-such-binary" in r.stderr


@needs_analyze
def test_unit_exposure(unit):
    r = analyze("security", "--offline=yes", "--no-pager", str(unit), cwd=unit.parent)
    out = r.stdout + r.stderr
    m = re.search(r"Overall exposure level for mailfeed\.service: ([0-9.]+)", out)
    assert m, out
    exposure = float(m.group(1))
    print(f"systemd-analyze security exposure: {exposure}")
    assert exposure <= MAX_EXPOSURE, out


def unit_settings():
    """The [Service] settings of the shipped unit: name -> [values]."""
    out = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_unit_bounds_memory_and_tasks():
    """A flood of hostile mail cannot take the host's memory or process
    table: the unit caps both, a worker killed for memory does not stop the
    service, and the README says what the caps are for."""
    s = unit_settings()
    size = s["MemoryMax"][-1]
    m = re.fullmatch(r"(\d+)([KMG])", size)
    assert m, size
    mib = int(m.group(1)) * {"K": 1 / 1024, "M": 1, "G": 1024}[m.group(2)]
    assert 512 <= mib <= 2048, size  # room for the daemon and a 512 MB worker
    tasks = int(s["TasksMax"][-1])
    assert 32 <= tasks <= 256, tasks
    assert s["OOMPolicy"] == ["continue"]
    # the parse worker installs its own seccomp filter
    assert "seccomp" in s["SystemCallFilter"]
    readme = (ROOT / "README.md").read_text()
    for word in ("MemoryMax=", "TasksMax=", "OOMPolicy="):
        assert word in readme, word


class Notifications:
    """A NOTIFY_SOCKET: every datagram's lines, in order of arrival."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.q = queue.Queue()
        self.seen = []
        self.running = True
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while self.running:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            for line in data.decode("utf-8", "replace").splitlines():
                self.q.put((time.monotonic(), line))

    def next(self, prefix, timeout):
        """Waits for the next line starting with prefix; returns (time, line)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {prefix!r} within {timeout}s; got {self.seen}")
            try:
                at, line = self.q.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(line)
            if line.startswith(prefix):
                return at, line

    def close(self):
        self.running = False
        self.thread.join()
        self.sock.close()


CONFIG = """\
[gateway]
state = {dir}/state.db
reply_address = feed@example.org
secret_file = {dir}/secret
log_level = debug

[feed]
backend = local
dir = {dir}/feeds
"""


@pytest.fixture
def daemon():
    """`mailfeed run` with the local backend and no mailboxes, under a
    2 s watchdog, with its notifications collected."""
    directory = tempfile.mkdtemp(prefix="mf-sd-")  # short: AF_UNIX paths are limited
    secret = Path(directory) / "secret"
    secret.write_bytes(os.urandom(32))
    secret.chmod(0o600)
    conf = Path(directory) / "mailfeed.conf"
    conf.write_text(CONFIG.format(dir=directory))
    notes = Notifications(directory)
    env = dict(os.environ, NOTIFY_SOCKET=notes.path, WATCHDOG_USEC="2000000")
    env.pop("WATCHDOG_PID", None)
    log = open(Path(directory) / "stderr.log", "w+")
    proc = subprocess.Popen([BIN, "-c", str(conf), "run"], env=env, stdout=log, stderr=log)
    yield proc, notes, conf, log
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)
    notes.close()
    log.close()
    shutil.rmtree(directory, ignore_errors=True)


def stderr_of(log):
    log.flush()
    log.seek(0)
    return log.read()[-4000:]


def test_notify_protocol(daemon):
    proc, notes, conf, log = daemon
    try:
        ready_at, _ = notes.next("READY=1", 30)
    except AssertionError:
        pytest.fail(f"no READY=1: {notes.seen}\n{stderr_of(log)}")
    notes.next("STATUS=", 5)

    # a 2 s watchdog wants a ping at least every second
    first, _ = notes.next("WATCHDOG=1", 3)
    second, _ = notes.next("WATCHDOG=1", 3 - (first - ready_at))
    assert second - ready_at <= 3.0, notes.seen

    proc.send_signal(signal.SIGHUP)
    notes.next("RELOADING=1", 10)
    notes.next("READY=1", 10)
    assert proc.poll() is None, stderr_of(log)

    # an invalid config is refused, the daemon keeps running with the old one
    with open(conf, "a") as f:
        f.write("this line is not a setting\n")
    proc.send_signal(signal.SIGHUP)
    notes.next("RELOADING=1", 10)
    notes.next("READY=1", 10)
    time.sleep(0.5)
    assert proc.poll() is None, stderr_of(log)
    r = subprocess.run([BIN, "-c", str(conf), "status", "--json"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, f"status with the refused config: {r.stderr}"
    status = json.loads(r.stdout)
    assert status.get("reload_error"), status
    assert f"{conf}:" in status["reload_error"], status["reload_error"]
    notes.next("WATCHDOG=1", 3)

    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    notes.next("STOPPING=1", 10)
    rc = proc.wait(timeout=max(0.1, 10 - (time.monotonic() - start)))
    assert rc == 0, stderr_of(log)
