"""A webhook receiver for the integration tests of mailfeed's webhook backend.

Listens on 127.0.0.1 (port 0 = a free one, printed as "PORT n" on stdout),
checks every POST the way a real receiver should (JSON content type, HMAC
signature recomputed from the body and the shared secret) and answers from a
script given on the command line, one entry per request in arrival order:

    200        {"id": "wh-N"}            (N counts accepted requests)
    204        no body (mailfeed then uses the delivery key as the id)
    429:7      429 with Retry-After: 7
    500 / 503  server error
    400 / 403  refusal with a JSON error text (carrying CR/LF, which mailfeed
               must not pass on)

When the script is used up every request gets 200.  Each request is appended
to the --log file as one JSON line: delivery key, signature verdicts (the
body signature, and the timed one, see verify_timed), the raw and parsed
body, and the status answered.
"""

import argparse
import base64
import hashlib
import hmac
import json
import sys
import threading
import time

REPLAY_WINDOW = 300  # seconds, as README recommends to receivers


def verify_timed(secret, timestamp, delivery, signature, body, now):
    """What a receiver does with X-Mailfeed-Signature-V2: the signature must
    cover this timestamp, delivery key and body, and the timestamp must be
    within REPLAY_WINDOW of now.  (Within the window a replay can only bring
    the same delivery key again, which the receiver deduplicates anyway.)"""
    if not timestamp or not timestamp.isdigit() or abs(now - int(timestamp)) > REPLAY_WINDOW:
        return False
    signed = timestamp.encode() + b"." + (delivery or "").encode() + b"." + body
    want = "sha256=" + hmac.new(secret, signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, signature or "")
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class State:
    def __init__(self, secret, script, log_path):
        self.secret = secret
        self.script = list(script)
        self.log_path = log_path
        self.accepted = 0
        self.lock = threading.Lock()

    def next_answer(self):
        with self.lock:
            entry = self.script.pop(0) if self.script else "200"
            status, _, retry_after = entry.partition(":")
            status = int(status)
            if status == 200:
                self.accepted += 1
                return status, retry_after, {"id": "wh-%d" % self.accepted}
            return status, retry_after, None

    def record(self, entry):
        with self.lock, open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def do_POST(self):
        st = self.server.state
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        want = "sha256=" + hmac.new(st.secret, body, hashlib.sha256).hexdigest()
        got = self.headers.get("X-Mailfeed-Signature", "")
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        status, retry_after, answer = st.next_answer()
        timed_ok = verify_timed(st.secret, self.headers.get("X-Mailfeed-Timestamp"),
                                self.headers.get("X-Mailfeed-Delivery"),
                                self.headers.get("X-Mailfeed-Signature-V2"), body, time.time())
        st.record({
            "path": self.path,
            "delivery": self.headers.get("X-Mailfeed-Delivery"),
            "signature_ok": hmac.compare_digest(want, got),
            "timestamp": self.headers.get("X-Mailfeed-Timestamp"),
            "signature_v2": self.headers.get("X-Mailfeed-Signature-V2"),
            "timed_ok": timed_ok,
            "raw": base64.b64encode(body).decode(),
            "content_type": self.headers.get("Content-Type"),
            "body": parsed,
            "status": status,
        })
        if status == 200:
            out = json.dumps(answer).encode()
        elif status == 204:
            out = b""
        elif status in (400, 403, 404):
            out = json.dumps({"error": "group archived\r\nX-Injected: yes"}).encode()
        else:
            out = b"temporarily unavailable"
        self.send_response(status)
        if retry_after:
            self.send_header("Retry-After", retry_after)
        if status != 204:
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if out:
            self.wfile.write(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secret", required=True, help="file with the shared secret")
    ap.add_argument("--log", required=True)
    ap.add_argument("--script", default="")
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    with open(a.secret, "rb") as f:
        secret = f.read()
    script = [s for s in a.script.split(",") if s]
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    srv.daemon_threads = True
    srv.state = State(secret, script, a.log)
    print("PORT %d" % srv.server_address[1], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
