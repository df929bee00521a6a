#!/usr/bin/python3
"""Reference for parse_bench: Python's standard email package parsing the
same Maildir (policy=default, get_body(('plain', 'html')))."""
import email
import email.policy
import os
import sys
import time

root = sys.argv[1]
t0 = time.monotonic()
n = 0
size = 0
for sub in ("new", "cur"):
    d = os.path.join(root, sub)
    if not os.path.isdir(d):
        continue
    for name in os.listdir(d):
        with open(os.path.join(d, name), "rb") as f:
            raw = f.read()
        size += len(raw)
        n += 1
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        body = msg.get_body(("plain", "html"))
        if body is not None:
            body.get_content()
        msg["subject"], msg["from"], msg["message-id"], msg["references"]
dt = time.monotonic() - t0
print("%d msgs %.1f MB %.2f s %.0f msgs/s %.1f MB/s" % (n, size / 1e6, dt, n / dt, size / 1e6 / dt))
