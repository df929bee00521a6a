"""One-click unsubscribe (RFC 8058) as a subscriber's mail client and an
admin's reverse proxy see it: with [digest] public_url set, a digest names
an https link first in List-Unsubscribe and carries List-Unsubscribe-Post;
the path of that link, POSTed to the loopback listener ([gateway]
metrics_listen) with Host: localhost, ends the subscription, twice alike;
a GET (a link scanner) or a wrong token changes nothing."""
import os
import re
import socket
import urllib.parse

import pytest

import test_digest as td
from conftest import start_daemon, stop_daemon, wait_for

PUBLIC = "https://mail.example.org/mailfeed"

pytestmark = pytest.mark.skipif(not os.access(td.MAILFEED, os.X_OK),
                                reason="mailfeed binary not built")


@pytest.fixture
def sink(tmp_path):
    s = td.Sink(tmp_path)
    yield s
    s.stop()


def http(port, method, path, host="localhost", body=None, ctype=None):
    """One HTTP/1.0 exchange; (status, body)."""
    head = "%s %s HTTP/1.0\r\nHost: %s\r\n" % (method, path, host)
    data = (body or "").encode()
    if body is not None:
        head += "Content-Type: %s\r\nContent-Length: %d\r\n" % (
            ctype or "application/x-www-form-urlencoded", len(data))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.encode() + b"\r\n" + data)
        got = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    h, _, b = got.partition(b"\r\n\r\n")
    return (int(h.split(b" ", 2)[1]) if h else 0), b.decode("utf-8", "replace")


def frequency(cfg):
    con = td.db(cfg)
    try:
        return con.execute("SELECT frequency FROM subscribers WHERE email='bob@example.org'"
                           ).fetchone()[0]
    finally:
        con.close()


def setup_digest(tmp_path, sink):
    cfg = td.make_config(tmp_path, sink.port)
    port = td.free_port()
    text = open(cfg.path).read()
    text = text.replace("[gateway]\n", "[gateway]\nmetrics_listen = 127.0.0.1:%d\n" % port, 1)
    text = text.replace("[digest]\n", "[digest]\npublic_url = %s/\n" % PUBLIC, 1)
    open(cfg.path, "w").write(text)
    td.prepare(cfg)
    td.add_item(cfg, "k1", "Shall we meet on Friday?", subject="Meeting")
    r = td.mf(cfg, "digest", "--now")
    assert r.returncode == 0, r.stderr
    msgs = sink.messages()
    assert len(msgs) == 1
    return cfg, port, msgs[0][1]


def test_one_click_unsubscribe_through_the_listener(tmp_path, sink):
    cfg, port, m = setup_digest(tmp_path, sink)
    assert m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsub = re.sub(r"\s+", " ", str(m["List-Unsubscribe"]))
    mo = re.fullmatch(r"<(https://[^>]+)>, ?<mailto:feed\+[a-z2-7]+@example\.org"
                      r"\?subject=unsubscribe>", unsub)
    assert mo, unsub
    url = urllib.parse.urlsplit(mo.group(1))
    assert url.scheme == "https" and url.netloc == "mail.example.org"
    assert url.path.startswith("/mailfeed/unsubscribe/")
    # the reverse proxy forwards /unsubscribe/ and below, without its prefix
    path = url.path[len("/mailfeed"):]
    token = path.rsplit("/", 1)[1]
    assert re.fullmatch(r"[a-z2-7]+", token)
    # the footer links the same page (whose button POSTs)
    text, html = td.parts(m)
    assert "Unsubscribe: " + mo.group(1) in text
    assert 'href="%s"' % mo.group(1) in html

    p = start_daemon(cfg.path)
    try:
        assert wait_for(lambda: _up(port), 20), open(p.log_path).read()
        assert frequency(cfg) == "daily"
        # a link scanner follows the link: a page with a button, nothing more
        status, body = http(port, "GET", path)
        assert status == 200, body
        assert re.search(r'<form method="post"', body) and "<button" in body
        assert frequency(cfg) == "daily"
        # wrong, tampered, truncated or foreign tokens: refused, nothing changed
        last = token[-1]
        tampered = token[:-1] + ("a" if last != "a" else "b")
        for bad in ("/unsubscribe/" + tampered, "/unsubscribe/" + token[:-3],
                    "/unsubscribe/", "/unsubscribe/../metrics", "/unsubscribe/" + "a" * 200):
            for method in ("POST", "GET"):
                status, body = http(port, method, bad, body="List-Unsubscribe=One-Click"
                                    if method == "POST" else None)
                assert status in (403, 404), (bad, method, status, body)
        assert frequency(cfg) == "daily"
        # a Host that is not loopback is refused before anything else
        status, _ = http(port, "POST", path, host="mail.example.org",
                         body="List-Unsubscribe=One-Click")
        assert status == 403
        assert frequency(cfg) == "daily"
        # what a mail client sends (RFC 8058): the subscription ends
        status, body = http(port, "POST", path, body="List-Unsubscribe=One-Click")
        assert status == 200, body
        assert "Unsubscribed" in body
        assert frequency(cfg) == "never"
        # again, and as the page's form sends it (multipart too): the same answer
        status2, body2 = http(port, "POST", path, host="127.0.0.1:%d" % port,
                              body="List-Unsubscribe=One-Click")
        assert (status2, body2) == (status, body)
        mp = ("--b\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\n"
              "One-Click\r\n--b--\r\n")
        status3, _ = http(port, "POST", path, body=mp, ctype="multipart/form-data; boundary=b")
        assert status3 == 200
        assert frequency(cfg) == "never"
        # the other endpoints are as they were
        assert http(port, "GET", "/metrics")[0] == 200
    finally:
        stop_daemon(p)
    # nothing is sent to an unsubscribed address
    td.add_item(cfg, "k2", "Another post", subject="Later")
    r = td.mf(cfg, "digest", "--now")
    assert r.returncode == 0, r.stderr
    assert len(sink.messages()) == 1


def _up(port):
    try:
        return http(port, "GET", "/metrics")[0] == 200
    except OSError:
        return False


def test_public_url_must_be_https_and_needs_the_listener(tmp_path, sink):
    cfg = td.make_config(tmp_path, sink.port)
    base = open(cfg.path).read()
    for value, listen, wanted in (
            ("http://mail.example.org/x", True, "https://"),
            ("https://mail.example.org/x?a=b", True, "query"),
            ("https://mail.example.org/x>", True, "angle brackets"),
            ("https://mail.example.org/x", False, "metrics_listen")):
        text = base.replace("[digest]\n", "[digest]\npublic_url = %s\n" % value, 1)
        if listen:
            text = text.replace("[gateway]\n", "[gateway]\nmetrics_listen = 127.0.0.1:%d\n"
                                % td.free_port(), 1)
        open(cfg.path, "w").write(text)
        r = td.mf(cfg, "check-config")
        assert r.returncode != 0, (value, r.stdout)
        assert wanted in r.stderr + r.stdout, (value, r.stderr)
