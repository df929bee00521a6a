#!/usr/bin/python3
"""Digest benchmark: render and send personalised digests to a local SMTP
server, and show that memory does not grow with the number of subscribers.

For each size N (default 1,000 and 10,000): a fresh state with N daily
subscribers of one group of the built-in local feed holding 20 posts (each
digest therefore carries 20 posts, 20 reply links and an unsubscribe link),
then `mailfeed digest --now` (release build, pinned to one CPU with taskset)
under /usr/bin/time -v against bench/smtp_count.py, a counting SMTP server on
127.0.0.1 (pinned to another CPU when there is one).  Prints digests/s, peak
RSS, mailfeed's CPU time, and the SMTP server's own CPU time (so it is
visibly not the bottleneck), and checks that every subscriber got exactly one
digest.

Reference, same run: the counting server's intake from a raw-socket client
(bench/smtp_count.py --selftest).

usage: bench/digest_bench.py [N ...]     (default: 1000 10000)"""
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MAILFEED = os.environ.get("MAILFEED", os.path.join(ROOT, "mailfeed"))
POSTS = 20

WORDS = ("budget campaign donor appeal quarterly report board meeting draft review "
         "volunteer event schedule partner grant outreach newsletter update thanks "
         "please agenda minutes follow-up deadline").split()


def text_of(i):
    n = 40 + (i * 37) % 120
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(n)) + \
        "\n\nBest,\nAnn"


def setup(work, n, smtp_port):
    secret = os.path.join(work, "secret")
    with open(secret, "wb") as f:
        f.write(os.urandom(32))
    os.chmod(secret, 0o600)
    pw = os.path.join(work, "imap.pass")
    with open(pw, "w") as f:
        f.write("unused\n")
    os.chmod(pw, 0o600)
    state = os.path.join(work, "state.db")
    conf = os.path.join(work, "mailfeed.conf")
    with open(conf, "w") as f:
        f.write(f"""[gateway]
state = {state}
reply_address = feed@example.org
secret_file = {secret}

[feed]
backend = local
dir = {work}/feed

[account staff]
host = 127.0.0.1
port = 1
tls = none
username = staff
password_file = {pw}

[mailbox team]
account = staff
folder = Team
group = team-group
start = all

[smtp]
url = smtp://127.0.0.1:{smtp_port}
from = Feed digest <digest@example.org>

[digest]
hour = 7
timezone = UTC
""")
    r = subprocess.run([MAILFEED, "-c", conf, "status"], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit("mailfeed status failed: " + r.stderr)
    now = int(time.time())
    con = sqlite3.connect(state)
    con.executemany(
        "INSERT INTO local_items(key, grp, parent, author_name, author_email, subject, text,"
        " created) VALUES(?,?,NULL,?,?,?,?,?)",
        [("bench-%d" % i, "team-group", "Ann Example", "ann@example.org",
          "Topic %d: %s" % (i, WORDS[i % len(WORDS)]), text_of(i), now - 3600 + i * 60)
         for i in range(POSTS)])
    con.executemany(
        "INSERT INTO subscribers(email, groups, frequency, since, source)"
        " VALUES(?, 'team', 'daily', ?, 'cli')",
        [("reader%05d@example.org" % i, now - 7200) for i in range(n)])
    con.commit()
    con.close()
    return conf


def timed(cmd):
    t0 = time.monotonic()
    r = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True)
    dt = time.monotonic() - t0
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    u = re.search(r"User time \(seconds\): ([\d.]+)", r.stderr)
    s = re.search(r"System time \(seconds\): ([\d.]+)", r.stderr)
    cpu = float(u.group(1)) + float(s.group(1)) if u and s else 0.0
    return dt, int(m.group(1)) if m else 0, cpu, r


def pinned(cpu, cmd):
    """cmd on one CPU, when taskset is there."""
    if shutil.which("taskset") and cpu < (os.cpu_count() or 1):
        return ["taskset", "-c", str(cpu)] + cmd
    return cmd


def one(n):
    work = tempfile.mkdtemp(prefix="mailfeed-digest-bench-")
    sink = subprocess.Popen(pinned(1, ["/usr/bin/python3", os.path.join(HERE, "smtp_count.py")]),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = int(sink.stdout.readline())
        conf = setup(work, n, port)
        dt, rss, cpu, r = timed(pinned(0, [MAILFEED, "-c", conf, "digest", "--now"]))
        sink.stdin.close()
        counts = json.loads(sink.stdout.readline())
        sink.wait(10)
        if r.returncode != 0:
            print(r.stderr[-2000:])
            raise SystemExit("mailfeed digest --now failed")
        ok = counts["messages"] == n and counts["recipients"] == n and \
            counts["max_per_recipient"] == 1
        return {"n": n, "seconds": dt, "rate": n / dt, "rss_mb": rss / 1024, "cpu_s": cpu,
                "sink": counts, "ok": ok,
                "avg_kb": counts["bytes"] / max(1, counts["messages"]) / 1024}
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def main():
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 10000]
    if not os.access(MAILFEED, os.X_OK):
        raise SystemExit("build the release binary first: make")
    ref = json.loads(subprocess.run(
        ["/usr/bin/python3", os.path.join(HERE, "smtp_count.py"), "--selftest", "5000"],
        capture_output=True, text=True, check=True).stdout)
    print("== digests (%d posts each, local feed, SMTP on loopback, release build)" % POSTS)
    print("reference: the counting SMTP server takes %d msgs/s of 20 KB from a raw "
          "Python client" % ref["per_s"])
    print("%8s %9s %11s %9s %11s %9s %9s %s" % ("subscr.", "seconds", "digests/s", "peak RSS",
                                              "mailfeed CPU", "SMTP CPU", "avg size",
                                              "each got one"))
    for n in sizes:
        x = one(n)
        print("%8d %9.2f %11.0f %6.1f MB %10.2fs %8.2fs %6.1f KB %s" % (
            x["n"], x["seconds"], x["rate"], x["rss_mb"], x["cpu_s"], x["sink"]["cpu_s"],
            x["avg_kb"], "yes" if x["ok"] else "NO: %s" % x["sink"]))
        print("  %.2fx the target of 200 digests/s; %.0f digests per CPU-second of mailfeed; "
              "SMTP server busy %.0f%% of the run" % (
                  x["rate"] / 200, x["n"] / max(x["cpu_s"], 0.01),
                  100 * x["sink"]["cpu_s"] / x["seconds"]))


if __name__ == "__main__":
    main()
