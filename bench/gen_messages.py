#!/usr/bin/python3
"""Writes N realistic messages (2-50 KB: plain, HTML alternatives, replies
with quoted history, attachments) into a Maildir for the benchmarks.

usage: gen_messages.py MAILDIR N [--seed S]
Deterministic for a given seed, so runs compare like with like."""
import base64
import os
import random
import sys
import time
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
import datetime

WORDS = ("the of and to in is it that for on with as was at by be this from "
         "appeal budget campaign donor event draft review please thanks team "
         "meeting report quarter update schedule grant letter board volunteer "
         "numbers target february march april deadline follow share idea").split()


def para(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def body_text(rng, size):
    out = []
    while sum(len(p) for p in out) < size:
        out.append(para(rng, rng.randint(8, 40)))
    return "\n\n".join(out)


def make(rng, i, threads):
    m = EmailMessage()
    sender = "user%d@example.org" % rng.randint(1, 40)
    m["From"] = "User %d <%s>" % (i % 40, sender)
    m["To"] = "fundraising@example.org"
    date = datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc) + \
        datetime.timedelta(minutes=i)
    m["Date"] = format_datetime(date)
    mid = make_msgid(domain="bench.example.org")
    m["Message-ID"] = mid
    target = rng.choice([2000, 4000, 8000, 15000, 30000, 45000])
    tag = rng.choice(["", "[Q3] ", "[Budget] "])
    if threads and rng.random() < 0.5:
        parent_mid, subject = rng.choice(threads)
        m["Subject"] = "Re: " + subject
        m["In-Reply-To"] = parent_mid
        m["References"] = parent_mid
        quoted = "\n".join("> " + l for l in body_text(rng, target // 3).splitlines())
        text = (body_text(rng, target // 3) + "\n\nOn Mon, 2 Nov 2026, someone wrote:\n"
                + quoted + "\n\n-- \nUser\nExample Org\n")
    else:
        subject = "%sTopic %d %s" % (tag, i, rng.choice(WORDS))
        m["Subject"] = subject
        threads.append((mid, subject))
        text = body_text(rng, target // 2) + " #campaign\n"
    kind = rng.random()
    if kind < 0.4:
        m.set_content(text)
    elif kind < 0.75:
        m.set_content(text)
        html = "<html><body>" + "".join(
            "<p>%s</p>" % p for p in text.split("\n\n")) + "</body></html>"
        m.add_alternative(html, subtype="html")
    else:
        m.set_content(text)
        blob = rng.randbytes(max(500, target - len(text)))
        m.add_attachment(blob, maintype="application", subtype="pdf",
                         filename="report-%d.pdf" % i)
    return m.as_bytes()


def main():
    path, n = sys.argv[1], int(sys.argv[2])
    seed = int(sys.argv[sys.argv.index("--seed") + 1]) if "--seed" in sys.argv else 1
    rng = random.Random(seed)
    for d in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(path, d), exist_ok=True)
    threads = []
    total = 0
    t = int(time.time()) - 86400
    for i in range(n):
        data = make(rng, i, threads)
        total += len(data)
        name = os.path.join(path, "new", "%d.%06d.bench" % (t, i))
        with open(name, "wb") as f:
            f.write(data)
        os.utime(name, (t + i, t + i))
    print("%d messages, %.1f MB" % (n, total / 1e6))


if __name__ == "__main__":
    main()
