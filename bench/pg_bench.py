#!/usr/bin/python3
"""The state on PostgreSQL against SQLite, in one run (release build,
./mailfeed).  Prints figures; never fails on speed.

  take-in:  an N-message folder (default 10,000; bench/gen_messages.py,
            2-50 KB, multipart, attachments) in a throwaway Dovecot on
            127.0.0.1 (IMAPS), passed once by `run --once` with the state in
            an SQLite file and once in a PostgreSQL 15 database on loopback
            (tests/integration/harness/postgres.py: fsync off, as a test
            server).  Each stage's seconds come from the pass's own
            `run.once done` line; the ratio is PostgreSQL / SQLite.
  delivery: M short posts (default 2,000) in another folder, passed the
            same way; the deliver_s figure is the local feed's delivery of
            the M posts.
  scaling:  the M posts of the PostgreSQL state made pending again (outbox
            rows back to 'pending', local_items emptied) and kept as a
            template database; for 1 and 3 instances, a copy of it is
            delivered by that many `mailfeed run` daemons started at once,
            each with its own working directory; the time is from the start
            to the last item delivered (polled every 20 ms).

usage: bench/pg_bench.py [N] [M] [--no-takein]   (default 10000 2000)"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import format_datetime

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import conftest  # noqa: E402  (the Dovecot harness of the test suite)
from harness.postgres import Postgres  # noqa: E402

MAILFEED = os.environ.get("MAILFEED_BENCH_BIN", os.path.join(ROOT, "mailfeed"))
ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
N = int(ARGS[0]) if ARGS else 10000
M = int(ARGS[1]) if len(ARGS) > 1 else 2000
NO_TAKEIN = "--no-takein" in sys.argv[1:]
STAGES = ("fetch_s", "process_s", "deliver_s", "total_s")


def short_post(i, date):
    m = EmailMessage()
    m["From"] = "User %d <user%d@example.org>" % (i % 40, i % 40)
    m["To"] = "team@example.org"
    m["Subject"] = "Delivery benchmark item %d" % i
    m["Date"] = format_datetime(date)
    m["Message-ID"] = "<pgbench.%d@example.org>" % i
    m.set_content("Item %d: the appeal draft, the budget and the volunteers for the spring"
                  " event.\n\nSee https://example.org/item/%d for details.\n\n#bench\n" % (i, i))
    return m.as_bytes()


def write_config(work, name, dv, folder, state):
    d = os.path.join(work, name)
    cfg = conftest.write_config(d, dv, folder=folder, after="keep", group=folder.lower(),
                                gateway={"state": state})
    return cfg


def run_once(cfg):
    r = subprocess.run([MAILFEED, "-c", cfg.path, "run", "--once"], capture_output=True,
                       text=True, timeout=3600)
    m = re.search(r"run\.once done .*", r.stderr)
    if r.returncode != 0 or not m:
        raise SystemExit("run --once failed (%d):\n%s" % (r.returncode, r.stderr[-3000:]))
    figs = dict(re.findall(r"(\w+)=([\d.]+)", m.group(0)))
    return {k: float(v) for k, v in figs.items()}


def engine_pair(work, dv, pg, folder, tag, count):
    """run --once of folder on SQLite, then on a fresh PostgreSQL database."""
    out = {}
    for engine in ("sqlite", "postgresql"):
        if engine == "sqlite":
            state = os.path.join(work, "%s-lite" % tag, "state.db")
        else:
            state = pg.create_database("%s_pg" % tag)
        figs = run_once(write_config(work, "%s-%s" % (tag, engine), dv, folder, state))
        if int(figs.get("delivered", 0)) < count * 0.9:
            raise SystemExit("%s: only %s of %d delivered" % (engine, figs.get("delivered"),
                                                              count))
        out[engine] = figs
    return out


def print_pair(title, count, pair, stages):
    print()
    print("== %s" % title)
    print("%-34s %10s %10s %10s %10s %8s" % ("stage", "SQLite s", "msgs/s", "PG s", "msgs/s",
                                             "PG/SQLite"))
    for k in stages:
        a, b = pair["sqlite"][k], pair["postgresql"][k]
        print("%-34s %10.2f %10.0f %10.2f %10.0f %7.2fx" % (
            k, a, count / max(a, 0.001), b, count / max(b, 0.001), b / max(a, 0.001)))


def pg_count(pg, db, query):
    return int(pg.sql(query, db)[0][0])


def scaling(work, dv, pg, folder, template):
    """Seconds for 1 and for 3 daemons to deliver the template's items."""
    pg.sql("UPDATE outbox SET state='pending', remote_id=NULL, delivered_at=NULL,"
           " attempts=0, next_at=0, error=NULL", template)
    cols = {r[0] for r in pg.sql("SELECT column_name FROM information_schema.columns"
                                 " WHERE table_name='outbox'", template)}
    if "claimed_by" in cols:
        pg.sql("UPDATE outbox SET claimed_by=NULL, claim_until=NULL", template)
    pg.sql("DELETE FROM local_items", template)
    total = pg_count(pg, template, "SELECT COUNT(*) FROM outbox")
    rows = []
    import psycopg2
    for n in (1, 3):
        db = "scale%d" % n
        pg.sql('CREATE DATABASE "%s" TEMPLATE "%s"' % (db, template))
        con = psycopg2.connect(pg.dsn(db))
        con.autocommit = True
        cur = con.cursor()
        procs, logs = [], []
        t0 = time.monotonic()
        for i in range(n):
            cfg = write_config(work, "scale%d-%d" % (n, i), dv, folder, pg.dsn(db))
            log = open(os.path.join(cfg.dir, "daemon.log"), "wb")
            logs.append(log)
            procs.append(subprocess.Popen([MAILFEED, "-c", cfg.path, "run"], stderr=log,
                                          stdout=subprocess.DEVNULL, cwd=cfg.dir))
        first = None
        done = 0
        deadline = t0 + 600
        try:
            while time.monotonic() < deadline:
                cur.execute("SELECT COUNT(*) FROM outbox WHERE state='delivered'")
                done = cur.fetchone()[0]
                if done and first is None:
                    first = time.monotonic()
                if done >= total:
                    break
                if any(p.poll() is not None for p in procs):
                    raise SystemExit("a daemon exited:\n" + open(logs[0].name).read()[-2000:])
                time.sleep(0.02)
            end = time.monotonic()
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            for log in logs:
                log.close()
            con.close()
        if done < total:
            raise SystemExit("%d instances: %d of %d delivered in 600 s" % (n, done, total))
        rows.append((n, end - t0, end - (first or t0)))
    return total, rows


def main():
    if not os.access(MAILFEED, os.X_OK):
        raise SystemExit("build the release binary first: make mailfeed")
    if not Postgres.available():
        raise SystemExit("PostgreSQL 15 is not installed (scripts/install-deps.sh)")
    work = tempfile.mkdtemp(prefix="mailfeed-pgbench-")
    os.chmod(work, 0o755)
    tls = conftest.TLS(os.path.join(work, "tls"))
    dv = conftest.Dovecot(os.path.join(work, "dovecot"), tls)
    pg = Postgres()
    try:
        if not NO_TAKEIN:
            src = os.path.join(work, "maildir")
            out = subprocess.run([sys.executable, os.path.join(HERE, "gen_messages.py"), src,
                                  str(N)], capture_output=True, text=True, check=True).stdout
            print("corpus: " + out.strip())
            raws = []
            for name in sorted(os.listdir(os.path.join(src, "new"))):
                with open(os.path.join(src, "new", name), "rb") as f:
                    raws.append(f.read())
            dv.bulk_import("alice", "Bench", raws)
            del raws
            shutil.rmtree(src, ignore_errors=True)
            dv.status("alice", "Bench")
        start = datetime.now(timezone.utc) - timedelta(days=1)
        dv.bulk_import("alice", "Posts", [short_post(i, start + timedelta(seconds=i))
                                          for i in range(M)])
        dv.status("alice", "Posts")

        takein = None if NO_TAKEIN else engine_pair(work, dv, pg, "Bench", "takein", N)
        deliver = engine_pair(work, dv, pg, "Posts", "posts", M)
        total, rows = scaling(work, dv, pg, "Posts", "posts_pg")

        if takein:
            print_pair("take-in and whole pass, %d messages, IMAPS on loopback, state in an "
                       "SQLite file vs PostgreSQL on loopback" % N, N, takein,
                       ("fetch_s", "process_s", "enqueue_s", "deliver_s", "total_s"))
        print_pair("%d short posts to the local feed (run --once)" % M, M, deliver,
                   ("fetch_s", "process_s", "deliver_s", "total_s"))
        print()
        print("== %d pending posts delivered to the local feed by daemons sharing one "
              "PostgreSQL state" % total)
        print("%-14s %12s %10s %16s %10s" % ("instances", "start->done", "posts/s",
                                             "first->last", "posts/s"))
        base = None
        for n, whole, busy in rows:
            base = base or total / whole
            print("%-14d %11.2fs %10.0f %15.2fs %10s  (%.2fx one instance, start->done)" % (
                n, whole, total / whole, busy,
                "%.0f" % (total / busy) if busy >= 0.05 else "-", (total / whole) / base))
        print("machine: %d CPUs (the daemons, PostgreSQL and the harness share them)"
              % os.cpu_count())
    finally:
        pg.close()
        dv.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
