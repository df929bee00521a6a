"""The state layer against a real PostgreSQL 15 (and SQLite beside it):
values of every type come back the same from both engines, a migration
started by several processes at once runs once, a lease is taken over
after its holder is killed within the lease time and never held by two,
a paused holder stops, and a database restart gives
"unavailable" and then works again.

Driven through build/asan/tests/dbprobe (tests/integration/dbprobe.c)."""
import os
import signal
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROBE = os.environ.get("MAILFEED_DBPROBE", os.path.join(ROOT, "build/asan/tests/dbprobe"))


@pytest.fixture(scope="module", autouse=True)
def _probe():
    if not os.path.exists(PROBE):
        r = subprocess.run(["make", "-s", "build/asan/tests/dbprobe"], cwd=ROOT,
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip("dbprobe not built: " + r.stderr[-500:])


def probe(target, *args, timeout=60, check=True):
    r = subprocess.run([PROBE, target, *map(str, args)], capture_output=True, text=True,
                       timeout=timeout)
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def start(target, *args, stdin=None, env=None):
    return subprocess.Popen([PROBE, target, *map(str, args)], stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, **(env or {})))


def finish(p, timeout=60):
    out, err = p.communicate(timeout=timeout)
    assert "Sanitizer" not in err and "runtime error" not in err, err
    return p.returncode, out


def sqlite_rows(path, query):
    import sqlite3
    with sqlite3.connect(path) as con:
        return [[str(v) for v in row] for row in con.execute(query)]


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request, tmp_path):
    """(target, sql) for each engine: sql(query) -> rows of strings."""
    if request.param == "sqlite":
        path = str(tmp_path / "state.db")
        return path, lambda q: sqlite_rows(path, q)
    pg = request.getfixturevalue("postgres")
    return pg.dsn, pg.sql


def test_values_round_trip_the_same_on_both_engines(postgres, tmp_path):
    lite = probe(str(tmp_path / "state.db"), "roundtrip").stdout
    pg = probe(postgres.dsn, "roundtrip").stdout
    assert pg == lite
    lines = pg.splitlines()
    assert lines[:4] == ["id 1", "id 2", "id 3", "id 4"]
    # int64 extremes, UTF-8 text, bytes with NULs and 0xff, a ? and $1 in text
    assert lines[4] == (r"row i=-9223372036854775808 t=-9223372036854775808 | i=0 t=plain"
                        r" | i=0 t=\x00a\xff'?\x00\x80")
    assert r"t=caf\xc3\xa9 \xf0\x9f\x93\xac" in lines[5]
    assert "t=it's ? $1" in lines[6]
    assert lines[7] == "row i=0 t=0 | NULL | NULL"
    # ?1 used twice; a ? inside a literal stays a question mark
    assert "row i=42 t=42 | i=82 t=82 | i=0 t=?x" in lines
    # the same ON CONFLICT upsert on both: one row updated, one inserted
    assert "row i=8 t=8" in lines and "changes 2" in lines
    assert "row i=1 t=1 | i=0 t=0" in lines  # booleans as 1/0


def test_dsn_file_and_connection_errors(postgres, tmp_path):
    f = tmp_path / "dsn"
    f.write_text(postgres.dsn + "\n")
    os.chmod(f, 0o600)
    assert "id 1" in probe("@" + str(f), "roundtrip").stdout
    # a wrong password is not an outage: no waiting will fix it
    wrong = postgres.dsn.replace(postgres.server.password, "not-the-password")
    r = probe(wrong, "roundtrip", check=False)
    assert r.returncode == 1
    assert "error open: cannot connect to PostgreSQL" in r.stdout
    assert "unavailable" not in r.stdout and "not-the-password" not in r.stdout
    # nothing listening: the database is away
    from harness.postgres import _free_port
    r = probe("postgresql://mailfeed@127.0.0.1:%d/x" % _free_port(), "roundtrip",
              check=False)
    assert r.returncode == 1 and "error open: unavailable: " in r.stdout


def test_migration_runs_once_when_several_start_at_once(engine):
    target, sql = engine
    ps = [start(target, "migrate") for _ in range(3)]
    outs = [finish(p) for p in ps]
    assert all(rc == 0 for rc, _ in outs), outs
    applied = sorted(int(out.split()[1]) for _, out in outs)
    assert sum(applied) == 3, outs
    assert all(out.strip().endswith("version 3") for _, out in outs), outs
    assert sorted(r[0] for r in sql("SELECT step FROM migration_runs")) == ["2", "3"]
    assert sql("SELECT version FROM schema_versions WHERE name='slow'") == [["3"]]


def ticks(sql):
    """[(id, epoch, holder)] of the lease-fenced writes, in write order."""
    return [(int(i), int(e), h)
            for i, e, h in sql("SELECT id, epoch, holder FROM ticks ORDER BY id")]


def test_lease_taken_over_within_its_length_after_kill9(postgres):
    lease_ms = 2000
    a = start(postgres.dsn, "hold", "inbox", lease_ms, 60)
    first = a.stdout.readline().split()
    assert first[:2] == ["held", "1"], first
    assert a.stdout.readline().startswith("instance pid=%d version=probe holds=inbox" % a.pid)
    b = start(postgres.dsn, "hold", "inbox", lease_ms, 1)
    time.sleep(0.6)
    assert b.poll() is None  # still waiting: a holds the lease
    killed = time.time()
    a.kill()
    a.wait()
    rc, out = finish(b)
    assert rc == 0, out
    held = out.split()
    assert held[:2] == ["held", "2"], out
    takeover = int(held[2]) / 1000.0 - killed
    print("lease take-over after kill -9: %.2f s (lease %.1f s)" % (takeover, lease_ms / 1000))
    assert 0 < takeover <= lease_ms / 1000.0 + 1.0
    assert out.strip().endswith("done")
    t = ticks(postgres.sql)
    assert {e for _, e, _ in t} == {1, 2}
    assert max(i for i, e, _ in t if e == 1) < min(i for i, e, _ in t if e == 2)


def test_paused_holder_stops_before_another_starts(postgres):
    # PostgreSQL only: a process paused inside an SQLite write would hold
    # the file's lock, which is SQLite's nature on one host, not a lease's
    target, sql = postgres.dsn, postgres.sql
    lease_ms = 1500
    a = start(target, "hold", "inbox", lease_ms, 60)
    assert a.stdout.readline().startswith("held 1 ")
    time.sleep(0.3)
    a.send_signal(signal.SIGSTOP)  # paused: no heartbeats, no work
    b = start(target, "hold", "inbox", lease_ms, 1)
    rc, out = finish(b)
    assert rc == 0 and out.startswith("held 2 "), out
    a.send_signal(signal.SIGCONT)
    rc, out = finish(a)
    assert rc == 3 and out.strip().endswith("lost"), out
    t = ticks(sql)
    # nothing of the paused holder was written after the new holder began
    assert max(i for i, e, _ in t if e == 1) < min(i for i, e, _ in t if e == 2)


def test_never_two_holders_at_once(engine):
    target, sql = engine
    ps = [start(target, "race", "digest", 5000, 3) for _ in range(6)]
    outs = [finish(p) for p in ps]
    assert all(rc == 0 for rc, _ in outs), outs
    tenures = sum(int(out.split()[-1]) for _, out in outs)
    assert tenures >= 6, outs
    t = ticks(sql)
    holder_of = {}
    last_epoch = 0
    for _, e, h in t:
        assert holder_of.setdefault(e, h) == h  # one holder per epoch
        assert e >= last_epoch  # epochs never interleave
        last_epoch = e
    assert len(holder_of) >= min(tenures, 6)
    assert len({h for h in holder_of.values()}) >= 2


class Repl:
    def __init__(self, target):
        self.p = start(target, "repl", stdin=subprocess.PIPE)
        assert self.p.stdout.readline().strip() == "ready"

    def __call__(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        return self.p.stdout.readline().strip()

    def close(self):
        rc, _ = finish(self.p)
        assert rc == 0


def test_restart_gives_unavailable_then_the_next_call_works(postgres):
    server = postgres.server
    r = Repl(postgres.dsn)
    assert r("insert 1") == "ok"
    server.stop()
    out = r("insert 2")
    assert out.startswith("unavailable: "), out
    assert r("insert 2").startswith("unavailable: ")
    server.start()
    assert r("insert 3") == "ok"
    # lost inside a transaction: the rest of it fails until rolled back
    assert r("begin") == "ok"
    assert r("insert 4") == "ok"
    server.restart()
    assert r("insert 5").startswith("unavailable: ")
    assert r("commit").startswith("unavailable: ")
    assert r("rollback") == "ok"
    assert r("insert 6") == "ok"
    # a crash of the server is the same to the caller
    server.kill()
    assert r("insert 7").startswith("unavailable: ")
    server.start()
    assert r("insert 8") == "ok"
    assert r("count") == "ok 4"
    # an SQL error is not an outage; the transaction it broke cannot commit
    assert r("begin") == "ok"
    assert r("insert 9") == "ok"
    out = r("fail")
    assert out.startswith("error: ") and "no_such_table" in out and "42P01" in out, out
    assert r("commit") == "error: the transaction had failed and was rolled back"
    assert r("insert 10") == "ok"
    r.close()
    assert sorted(int(k) for k, in postgres.sql("SELECT k FROM rows")) == [1, 3, 6, 8, 10]
