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
          in-process and through the sandboxed worker, in batches as the
          daemon does) against Python's email package (bench/parse_ref.py),
          with msgs/s, MB/s, the ratio to Python and peak RSS of each.

usage: bench/ingest_bench.py [N] [--parse-only] [--no-parse]   (default 10000)
       --parse-only: just the parse benchmark, no Dovecot needed
       --no-parse: just the ingest benchmark"""
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
ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
N = int(ARGS[0]) if ARGS else 10000
PARSE_ONLY = "--parse-only" in sys.argv[1:]
NO_PARSE = "--no-parse" in sys.argv[1:]


def timed(cmd, **kw):
    """(seconds, max RSS in KB, CompletedProcess) via /usr/bin/time -v."""
    t0 = time.monotonic()
    r = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True, **kw)
    dt = time.monotonic() - t0
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    return dt, int(m.group(1)) if m else 0, r


FIGURES = re.compile(r"(\d+) msgs ([\d.]+) MB ([\d.]+) s ([\d.]+) msgs/s ([\d.]+) MB/s")


def cpu_seconds(stderr):
    """User + system CPU seconds of a run (and of its waited-for children,
    the parse worker) from /usr/bin/time -v."""
    secs = [float(x) for x in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", stderr)]
    return sum(secs)


def parse_section(src, total_bytes):
    """parse + clean + thread of the Maildir src: Python, then mailfeed in
    both modes; ratios from the seconds each program reports for its loop,
    and from the CPU seconds of each process (whole run), which a busy
    machine does not inflate."""
    print()
    print("== parse + clean + thread (%d messages, %.1f MB)" % (N, total_bytes / 1e6))
    pb = os.path.join(ROOT, "build", "rel", "parse_bench")
    runs = [("python email (policy=default, get_body)",
             ["/usr/bin/python3", os.path.join(HERE, "parse_ref.py"), src]),
            ("mailfeed in-process", [pb, src]),
            ("mailfeed through the sandboxed worker", [pb, src, "--worker"])]
    print("%-40s %8s %9s %8s %9s %6s %9s %10s" % ("", "seconds", "msgs/s", "MB/s", "vs python",
                                                   "CPU s", "CPU ratio", "peak RSS"))
    ref = cpu_ref = None
    for label, cmd in runs:
        _, rss, r = timed(cmd)
        m = FIGURES.search(r.stdout)
        if r.returncode != 0 or not m:
            raise SystemExit("%s failed: %s" % (label, (r.stdout + r.stderr)[-1500:]))
        secs = float(m.group(3))
        cpu = max(cpu_seconds(r.stderr), 0.01)
        ref = ref or secs
        cpu_ref = cpu_ref or cpu
        print("%-40s %8.2f %9.0f %8.1f %8.1fx %6.2f %8.1fx %7.1f MB" %
              (label, secs, float(m.group(4)), float(m.group(5)), ref / secs, cpu, cpu_ref / cpu,
               rss / 1024))
    print("target: >= 10x python in both modes; peak RSS bounded (no message kept)")


def takein_alone(work, dv, ref_s):
    """Take-in with nothing else running (bench/takein_bench: the watcher's
    fetch + durable store of the folder into a fresh state), against the
    raw fetch: the take-in's own pace, without run --once's start-up."""
    tb = os.path.join(ROOT, "build", "rel", "takein_bench")
    if not os.path.exists(tb):
        print("take-in alone: build/rel/takein_bench not built (make build/rel/takein_bench)")
        return
    cfg = conftest.write_config(pathlib.Path(work) / "alone", dv, folder="Bench", after="keep")
    r = subprocess.run([tb, cfg.path], capture_output=True, text=True, timeout=3600)
    m = re.search(r"(\d+) msgs ([\d.]+) s ([\d.]+) msgs/s ([\d.]+) cpu_s ([\d.]+) MB", r.stdout)
    if r.returncode != 0 or not m:
        raise SystemExit("takein_bench failed: " + (r.stdout + r.stderr)[-1500:])
    secs = float(m.group(2))
    print("%-44s %9.2f %10.0f %7.1f MB" % ("mailfeed take-in alone (takein_bench)", secs,
                                          float(m.group(3)), float(m.group(5))))
    print("ratio take-in alone / raw fetch: %.2f  (target >= 0.67)" % (ref_s / secs))


def make_corpus(work):
    """The N generated messages as a Maildir under work."""
    src = os.path.join(work, "maildir")
    out = subprocess.run(["/usr/bin/python3", os.path.join(HERE, "gen_messages.py"), src, str(N)],
                         capture_output=True, text=True, check=True).stdout
    print("corpus: " + out.strip())
    return src


def main():
    work = tempfile.mkdtemp(prefix="mailfeed-bench-")
    os.chmod(work, 0o755)
    if PARSE_ONLY:
        try:
            src = make_corpus(work)
            total = sum(os.path.getsize(os.path.join(src, "new", f))
                        for f in os.listdir(os.path.join(src, "new")))
            parse_section(src, total)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    tls = conftest.TLS(os.path.join(work, "tls"))
    dv = conftest.Dovecot(os.path.join(work, "dovecot"), tls)
    try:
        src = make_corpus(work)
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
        m = re.search(r"fetch_s=([\d.]+) process_s=([\d.]+) deliver_s=([\d.]+) total_s=([\d.]+)"
                      r" parse_s=([\d.]+) enqueue_s=([\d.]+) enqueue_cpu_s=([\d.]+)"
                      r" deliver_cpu_s=([\d.]+)", r.stderr)
        (fetch_s, process_s, deliver_s, total_s, parse_s, enqueue_s, enqueue_cpu,
         deliver_cpu) = (float(x) for x in m.groups())
        print()
        print("== ingest (%d messages, %.1f MB, IMAPS on loopback)" % (N, total_bytes / 1e6))
        print("%-44s %9s %10s %9s" % ("", "seconds", "msgs/s", "peak RSS"))
        print("%-44s %9.2f %10.0f %7.1f MB" % ("raw UID FETCH 1:* BODY.PEEK[] (imaplib)", ref_s,
                                              N / ref_s, ref_rss / 1024))
        print("%-44s %9.2f %10.0f %7.1f MB" % ("mailfeed take-in (fetch + store, durable)",
                                              fetch_s, N / fetch_s, mf_rss / 1024))
        print("%-44s %9.2f %10.0f" % ("mailfeed parse + classify + thread + enqueue",
                                     process_s, N / process_s))
        print("%-44s %9.2f %10.0f" % ("  of which waiting for reads and parses",
                                     parse_s, N / max(parse_s, 0.001)))
        print("%-44s %9.2f %10.0f  (target >= 5000)" % ("  of which classify + thread + enqueue",
                                                       enqueue_s, N / max(enqueue_s, 0.001)))
        print("%-44s %9.2f %10.0f  (target >= 5000)" % ("mailfeed deliver (local feed)",
                                                       deliver_s, N / deliver_s))
        print("%-44s %9.2f %10.0f" % ("mailfeed whole pass", total_s, N / total_s))
        print("on the CPU (what a busy shared machine does not inflate):")
        print("%-44s %9.2f %10.0f" % ("  classify + thread + enqueue", enqueue_cpu,
                                     N / max(enqueue_cpu, 0.001)))
        print("%-44s %9.2f %10.0f" % ("  deliver (local feed)", deliver_cpu,
                                     N / max(deliver_cpu, 0.001)))
        print("ratio whole pass / raw fetch: %.1f  (target <= 4)" % (total_s / ref_s))
        print("ratio take-in / raw fetch: %.2f  (target >= 0.67)" % (ref_s / fetch_s))
        print("peak RSS of the whole pass: %.1f MB (target < 30 MB)" % (mf_rss / 1024))

        takein_alone(work, dv, ref_s)
        if not NO_PARSE:
            parse_section(src, total_bytes)
    finally:
        dv.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
