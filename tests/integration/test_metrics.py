"""Prometheus metrics as an operator scrapes them: `mailfeed run` with
[gateway] metrics_listen answers GET /metrics on loopback, writes
metrics_file, reports a mailbox whose server is down, and check-config
refuses a listen address that is not loopback."""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("MAILFEED_BIN", str(ROOT / "build/asan/mailfeed"))
SAMPLE = re.compile(r'^mailfeed_[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+]+$')


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, path, timeout=10):
    """One HTTP/1.0 exchange; returns (status code, headers dict, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    code = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    return code, headers, body.decode()


def check_format(body):
    samples = [l for l in body.splitlines() if l and not l.startswith("#")]
    assert samples, body
    for line in body.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) mailfeed_[a-z_]+ ", line), line
        else:
            assert SAMPLE.match(line), line


def write_config(directory, extra=""):
    secret = directory / "secret"
    secret.write_bytes(os.urandom(32))
    secret.chmod(0o600)
    pw = directory / "imap.pass"
    pw.write_text("pw\n")
    pw.chmod(0o600)
    conf = directory / "mailfeed.conf"
    conf.write_text(f"""\
[gateway]
state = {directory}/state.db
reply_address = feed@example.org
secret_file = {secret}
{extra}
[feed]
backend = local
dir = {directory}/feeds

[account down]
host = 127.0.0.1
port = {free_port()}
tls = none
username = nobody
password_file = {pw}

[mailbox ops]
account = down
folder = INBOX
group = ops
""")
    return conf


@pytest.fixture
def daemon():
    directory = Path(tempfile.mkdtemp(prefix="mf-metrics-"))
    port = free_port()
    prom = directory / "mailfeed.prom"
    conf = write_config(directory, f"metrics_listen = 127.0.0.1:{port}\n"
                                   f"metrics_file = {prom}\n")
    log = open(directory / "stderr.log", "w+")
    proc = subprocess.Popen([BIN, "-c", str(conf), "run"], stdout=log, stderr=log)
    yield proc, port, prom, log
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.close()
    shutil.rmtree(directory, ignore_errors=True)


def stderr_of(log):
    log.flush()
    log.seek(0)
    return log.read()[-4000:]


def scrape_until(proc, port, log, wanted, timeout=30):
    """Scrapes until wanted (a substring) is in the body; returns the last answer."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, stderr_of(log)
        try:
            last = http_get(port, "/metrics")
            if wanted in last[2]:
                return last
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"{wanted!r} never scraped; last answer {last}\n{stderr_of(log)}")


def test_scrape_shows_mailbox_down(daemon):
    proc, port, _, log = daemon
    code, headers, body = scrape_until(proc, port, log,
                                       'mailfeed_mailbox_error{mailbox="ops"} 1\n')
    assert code == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert int(headers["content-length"]) == len(body.encode())
    check_format(body)
    assert 'mailfeed_outbox_items{state="pending"} 0\n' in body

    code, _, body = http_get(port, "/")
    assert code == 404
    assert "mailfeed_" not in body


def test_metrics_file_written(daemon):
    proc, port, prom, log = daemon
    deadline = time.monotonic() + 20
    while not prom.exists() and time.monotonic() < deadline:
        assert proc.poll() is None, stderr_of(log)
        time.sleep(0.3)
    assert prom.exists(), stderr_of(log)
    body = prom.read_text()
    check_format(body)
    assert "# TYPE mailfeed_outbox_items gauge" in body


def test_listener_stops_with_daemon(daemon):
    proc, port, _, log = daemon
    scrape_until(proc, port, log, "mailfeed_outbox_items")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0, stderr_of(log)
    with pytest.raises(OSError):
        http_get(port, "/metrics", timeout=2)


@pytest.mark.parametrize("addr", ["0.0.0.0:9464", "192.0.2.1:9464", "[::]:9464"])
def test_check_config_refuses_public_listen(tmp_path, addr):
    conf = write_config(tmp_path, f"metrics_listen = {addr}\n")
    r = subprocess.run([BIN, "-c", str(conf), "check-config"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2, r.stderr
    line = next(i for i, l in enumerate(conf.read_text().splitlines(), 1)
                if l.startswith("metrics_listen"))
    assert f"{conf}:{line}: metrics_listen = {addr}: is not a loopback address" in r.stderr
