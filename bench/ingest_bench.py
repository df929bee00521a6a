#!/usr/bin/python3
"""Ingestion and parsing benchmarks, each against a reference measured in
the same run.  Prints figures; never fails on speed.

  ingest: a 10,000-message folder (2-50 KB, multipart, attachments) in a
          throwaway Dovecot on 127.0.0.1 (IMAPS).  Reference: one raw
          `UID FETCH 1:* BODY.PEEK[]` of the same folder (bench/raw_fetch.py).
          mailfeed: `run --once` (fetch + store; then parse, thread and
          deliver to the local feed), timed by its own log line, peak RSS by
          /usr/bin/time -v.
  parse:  parse + clean + thread of the same messages (bench/parse_bench,
          in-process and through the sandboxed worker) against Python's
          email package (bench/parse_ref.py).

usage: bench/ingest_bench.py [N]   (default 10000)"""
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import conftest  # noqa: E402  (the Dovecot harness of the test suite)

MAILFEED = os.path.join(ROOT, "mailfeed")
N = int(sys.argv[1]) if len(sys.argv) > 1 else 10000


def timed(cmd, **kw):
    """(seconds, max RSS in KB, CompletedProcess) via /usr/bin/time -v."""
    t0 = time.monotonic()
    r = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True, **kw)
    dt = time.monotonic() - t0
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    return dt, int(m.group(1)) if m else 0, r


def main():
    work = tempfile.mkdtemp(prefix="mailfeed-bench-")
    os.chmod(work, 0o755)
    tls = conftest.TLS(os.path.join(work, "tls"))
    dv = conftest.Dovecot(os.path.join(work, "dovecot"), tls)
    try:
        src = os.path.join(work, "maildir")
        out = subprocess.run(["/usr/bin/python3", os.path.join(HERE, "gen_messages.py"), src,
                              str(N)], capture_output=True, text=True, check=True).stdout
        print("corpus: " + out.strip())
        raws = []
        for sub in ("new",):
            for name in sorted(os.listdir(os.path.join(src, sub))):
                with open(os.path.join(src, sub, name), "rb") as f:
                    raws.append(f.read())
        dv.bulk_import("alice", "Bench", raws)
        total_bytes = sum(len(r) for r in raws)
        del raws
        print(dv.status("alice", "Bench"))  # lets Dovecot index the folder once

        ref_s, ref_rss, r = timed(["/usr/bin/python3", os.path.join(HERE, "raw_fetch.py"),
                                   "127.0.0.1", str(dv.imaps_port), tls.ca_file, "alice",
                                   "alicepw", "Bench"])
        if r.returncode != 0:
            raise SystemExit("raw fetch failed: " + r.stderr[:1500])

        cfg = conftest.write_config(pathlib.Path(work), dv, folder="Bench", after="keep")
        mf_s, mf_rss, r = timed([MAILFEED, "-c", cfg.path, "run", "--once"], timeout=3600)
        if r.returncode != 0:
            print(r.stderr[-2000:])
            raise SystemExit("mailfeed run --once failed")
        m = re.search(r"fetch_s=([\d.]+) process_s=([\d.]+) deliver_s=([\d.]+) total_s=([\d.]+)",
                      r.stderr)
        fetch_s, process_s, deliver_s, total_s = (float(x) for x in m.groups())
        print()
        print("== ingest (%d messages, %.1f MB, IMAPS on loopback)" % (N, total_bytes / 1e6))
        print("%-44s %9s %10s %9s" % ("", "seconds", "msgs/s", "peak RSS"))
        print("%-44s %9.2f %10.0f %7.1f MB" % ("raw UID FETCH 1:* BODY.PEEK[] (imaplib)", ref_s,
                                              N / ref_s, ref_rss / 1024))
        print("%-44s %9.2f %10.0f %7.1f MB" % ("mailfeed take-in (fetch + store, durable)",
                                              fetch_s, N / fetch_s, mf_rss / 1024))
        print("%-44s %9.2f %10.0f" % ("mailfeed parse + classify + thread + enqueue",
                                     process_s, N / process_s))
        print("%-44s %9.2f %10.0f" % ("mailfeed deliver (local feed)", deliver_s, N / deliver_s))
        print("%-44s %9.2f %10.0f" % ("mailfeed whole pass", total_s, N / total_s))
        print("ratio take-in / raw fetch: %.2f  (target >= 0.67)" % (ref_s / fetch_s))
        print("peak RSS of the whole pass: %.1f MB (target < 30 MB)" % (mf_rss / 1024))

        print()
        print("== parse + clean + thread (%d messages)" % N)
        pb = os.path.join(ROOT, "build", "rel", "parse_bench")
        py_s, py_rss, r = timed(["/usr/bin/python3", os.path.join(HERE, "parse_ref.py"), src])
        print("python email (policy=default, get_body): %s  peak %.1f MB" % (r.stdout.strip(),
                                                                          py_rss / 1024))
        c_s, c_rss, r = timed([pb, src])
        print("mailfeed in-process:                     %s  peak %.1f MB" % (r.stdout.strip(),
                                                                          c_rss / 1024))
        w_s, w_rss, r2 = timed([pb, src, "--worker"])
        print("mailfeed through the sandboxed worker:   %s  peak %.1f MB" % (r2.stdout.strip(),
                                                                          w_rss / 1024))
        print("ratio vs python: in-process %.1fx, worker %.1fx  (target >= 10x)" %
              (py_s / c_s, py_s / w_s))
    finally:
        dv.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
