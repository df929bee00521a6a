"""The loopback HTTP listener ([gateway] metrics_listen) as a scraper, a
monitor and an attacker see it: several connections at once, idle ones cut
off, oversized requests refused, a Host header that is not loopback refused
(DNS rebinding), and GET /healthz answering 200 or 503 with the reason."""
import socket
import time

import pytest

from conftest import Secret, start_daemon, stop_daemon, wait_for, write_config
from harness import free_port


def http(port, path, host=None, extra="", timeout=10, method="GET"):
    """One HTTP/1.0 exchange; (status, body)."""
    host = host if host is not None else "127.0.0.1:%d" % port
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(("%s %s HTTP/1.0\r\nHost: %s\r\n%s\r\n" % (method, path, host, extra)).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    return status, body.decode("utf-8", "replace")


def listener_config(tmp_path, srv=None, **account):
    port = free_port()
    kw = {"gateway": {"metrics_listen": "127.0.0.1:%d" % port}}
    if srv is not None:
        acct = {"host": "127.0.0.1", "port": srv.port, "tls": "none", "username": srv.user,
                "password_file": Secret(srv.password), "timeout": 10}
        acct.update(account)
        kw["account alice"] = acct
        kw["mailbox team"] = {"account": "alice", "folder": "INBOX", "group": "team"}
    cfg = write_config(tmp_path, None, **kw)
    return cfg, port


def up(port):
    def ok():
        try:
            return http(port, "/metrics", timeout=2)[0] == 200
        except OSError:
            return False
    return ok


def test_idle_connections_do_not_block_a_scrape(tmp_path):
    cfg, port = listener_config(tmp_path)
    p = start_daemon(cfg)
    assert wait_for(up(port), 20), open(p.log_path).read()
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(6)]
    try:
        t0 = time.monotonic()
        status, body = http(port, "/metrics")
        assert status == 200 and "mailfeed_" in body
        assert time.monotonic() - t0 < 2, "a scrape waited for idle connections"
        # an idle connection is closed after a short deadline
        idle[0].settimeout(15)
        t0 = time.monotonic()
        assert idle[0].recv(100) == b""
        assert time.monotonic() - t0 < 12
    finally:
        for s in idle:
            s.close()
    stop_daemon(p)


def test_oversized_request_is_refused(tmp_path):
    cfg, port = listener_config(tmp_path)
    p = start_daemon(cfg)
    assert wait_for(up(port), 20)
    try:
        status, body = http(port, "/metrics", extra="X-Junk: %s\r\n" % ("a" * 100000))
    except OSError:
        status, body = 0, ""  # cut off: also fine
    assert status != 200 and "mailfeed_" not in body
    status, _ = http(port, "/metrics", method="POST")
    assert status == 405
    stop_daemon(p)


@pytest.mark.parametrize("host,allowed", [
    ("127.0.0.1:{port}", True), ("localhost:{port}", True), ("[::1]:{port}", True),
    ("127.0.0.1", True), ("rebind.example.org:{port}", False),
    ("127.0.0.1.nip.io:{port}", False), ("127.0.0.1:1", False), ("192.0.2.1:{port}", False)])
def test_host_header_must_name_loopback(tmp_path, host, allowed):
    cfg, port = listener_config(tmp_path)
    p = start_daemon(cfg)
    assert wait_for(up(port), 20)
    for path in ("/metrics", "/healthz"):
        status, body = http(port, path, host=host.format(port=port))
        if allowed:
            assert status in (200, 503), (status, body)
        else:
            assert status == 403, (status, body)
            assert "mailfeed_" not in body
    stop_daemon(p)


def test_healthz_ok_and_reports_a_refused_login(tmp_path, hostile):
    hostile.add(b"Subject: x\r\nMessage-ID: <x@example.org>\r\n\r\nhi\r\n")
    cfg, port = listener_config(tmp_path, hostile)
    p = start_daemon(cfg)
    assert wait_for(up(port), 20)
    assert wait_for(lambda: hostile.count("SELECT") >= 1, 20)
    status, body = http(port, "/healthz")
    assert status == 200, body
    assert body.startswith("ok\n")
    assert "mailbox team: ok" in body and "processor: ok" in body
    stop_daemon(p)

    hostile.login_response = "NO [AUTHENTICATIONFAILED] Authentication failed."
    p = start_daemon(cfg)
    assert wait_for(up(port), 20)
    assert wait_for(lambda: "login refused" in http(port, "/healthz")[1], 20)
    status, body = http(port, "/healthz")
    assert status == 200, body
    assert "mailbox team: login refused, waiting" in body
    assert "Authentication failed" in body
    stop_daemon(p)


def test_healthz_503_names_a_stuck_watcher(tmp_path, hostile):
    hostile.add(b"Subject: x\r\nMessage-ID: <x@example.org>\r\n\r\nhi\r\n")
    hostile.drip = "SELECT"        # in time for every read, never done
    hostile.drip_delay = 0.5
    cfg, port = listener_config(tmp_path, hostile, timeout=60)
    p = start_daemon(cfg, env={"MAILFEED_HEALTH_STEP": "2"})
    assert wait_for(up(port), 20)
    assert wait_for(lambda: http(port, "/healthz")[0] == 503, 20), http(port, "/healthz")
    status, body = http(port, "/healthz")
    assert body.startswith("unhealthy\n")
    assert "mailbox team: no progress for" in body
    assert "processor: ok" in body
    p.kill()
    p.wait(10)
