"""Shared fixtures and helpers for the integration tests (run with
/usr/bin/python3 -m pytest tests/integration; the binary under test is
$MAILFEED_BIN, default build/asan/mailfeed).

Fixtures
  tls_ca       (session) harness.TestCA: .ca_file, .cert/.key (localhost and
               127.0.0.1), .wrong_cert/.wrong_key (same CA, imap.example.org
               only), .other_ca_file (unrelated CA, for "untrusted" tests).
  dovecot      (function) a fresh harness.Dovecot, ~0.15 s to start:
               .host "127.0.0.1", .imap_port (= .port_imap; plain, offers
               STARTTLS), .imaps_port (= .port_imaps), .ca_file,
               .other_ca_file, .conf, .users {"alice": "alicepw", "bob":
               "bobpw"}, .user/.password (alice's), .mismatch_host
               ("127.0.0.2": same server, a name not in its certificate),
               .wrong_name_port (IMAPS on 127.0.0.1 whose certificate, from
               the same CA, names only imap.example.org), .free_port().
               Mail: .create_folder(user, f), .delete_folder(user, f),
               .append(user, f, raw) (unseen, wakes IDLE), .bulk_import(user,
               f, [raw...]) (fast, unseen, UIDs in list order),
               .messages(user, f) -> [(uid, [flags], raw)], .status(user, f),
               .set_uidvalidity(user, f, n), .add_user(name, pw).
               Server: .restart(**opts), .stop(), .log_text().
  dovecot_factory  (function) make_dovecot(oauth2=False, imap_capability=None,
               idle_notify="2 mins", extra="conf text") for special servers: oauth2=True adds an
               introspection stub accepting tokens "tok-alice"/"tok-bob"
               (.add_token(tok, user), .revoke_token(tok)); imap_capability
               replaces the post-login capability list (e.g. without MOVE
               and UIDPLUS).  All stopped at the end of the test.
  smtp_sink    (function) harness.SmtpSink with STARTTLS (test CA), no AUTH:
               .port, .messages() -> [(envelope dict, EmailMessage, raw)],
               .wait_for(n, timeout), .fail(stage, "451 ...", times=1,
               address=None), .clear_failures().
  smtp_sink_factory  (function) make_sink(require_tls=False, username=None,
               password=None) for AUTH / TLS-required sinks.

Helpers (import them: `from conftest import write_config, ...`)
  write_config(tmp_path, dovecot=None, **kw) -> Config (a str: the path;
      also .path .state .dir .feed_dir (= .feeds)).  With a dovecot:
      [account USER] (alice; IMAPS, ca_file = the test CA, timeout 10) and
      [mailbox NAME] (team; folder INBOX, group team, after seen, start all).
      Shortcuts: folder, group, after, name, user, password,
      token (XOAUTH2 through oauth2_token_file), host, port, tls
      ("implicit" | "starttls" | "none"), ca_file, cert_name_mismatch=True
      (connects to .wrong_name_port).  Any keyword whose value is a dict is
      a section: gateway=, feed=, account=, mailbox= merge into the
      defaults (mailbox=None drops the mailbox); others are added as
      written, e.g. smtp={...}, **{"subscriber bob@example.org": {...}}.
      A value Secret("text") becomes a mode-600 file and its path.
      feed="[feed]\n..." (a str) replaces the [feed] section; extra="..."
      is raw text appended at the end.
  run_mailfeed(config, *args, timeout=60, env=None, input=None) ->
      CompletedProcess (text); config None = no -c.
  start_daemon(config, *args) -> Popen of `mailfeed run`, stderr in a file
      (p.log_path); stop_daemon(p, sig=SIGTERM) asserts exit 0 within 10 s
      and no sanitizer report, and returns the log.  Daemons still running at the end of a
      test are killed.
  state_db(config) -> connection to the state (sqlite3 with row_factory
      Row, or the same use on PostgreSQL when the state is a DSN).
  state_target(dir) -> what a test writing its own config puts as state:
      dir/state.db, or the directory's PostgreSQL database (a DSN).
  state_connect(target, timeout=5) -> a connection to a state named by path
      or DSN, rows as tuples (sqlite3.connect's use); state_exists(target).
      On PostgreSQL, errors come as sqlite3.OperationalError /
      IntegrityError, cursor.lastrowid works, and ids a test gives move the
      table's sequence on (as SQLite's rowid does).
  MAILFEED_TEST_ENGINE=postgresql in the environment: write_config's
      default state is a fresh PostgreSQL database per test directory
      (pg_state_for(dir)); pg_server() is the run's server.  Which files
      tests/run-tests.sh runs on both engines: both-engines.txt.
  wait_for(pred, timeout, step=0.05) -> bool
  TLS(dir), Dovecot(dir, tls, **opts): the same servers outside pytest
      (benchmarks).
"""
import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness.hostile_imap import HostileImap  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MAILFEED = os.environ.get("MAILFEED_BIN", str(ROOT / "build/asan/mailfeed"))
# the probes drive one module directly: src/imap.c, a feed backend
IMAPPROBE = os.environ.get("MAILFEED_IMAPPROBE", str(ROOT / "build/asan/tests/imapprobe"))
FEEDPROBE = os.environ.get("FEEDPROBE_BIN", str(ROOT / "build/asan/tests/feedprobe"))
ASAN_OPTIONS = os.environ.get("ASAN_OPTIONS", "detect_leaks=1:exitcode=99")

_daemons = []


# ------------------------------------------------------------------ fixtures

TLS = harness.TestCA


def Dovecot(dir, tls, **opts):
    """A harness.Dovecot living in dir (for use outside pytest)."""
    return harness.Dovecot(tls, dir=dir, **opts)


@pytest.fixture(scope="session")
def imapprobe():
    """The IMAP client probe, built if it is missing or out of date."""
    r = subprocess.run(["make", "-s", "build/asan/tests/imapprobe"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return IMAPPROBE


@pytest.fixture
def hostile():
    """An IMAP server that lies, floods or stalls (harness/hostile_imap.py)."""
    srv = HostileImap()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def tls_ca(tmp_path_factory):
    return harness.TestCA(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def tls(tls_ca):
    return tls_ca


@pytest.fixture
def dovecot_factory(tls_ca):
    made = []

    def make(**opts):
        d = harness.Dovecot(tls_ca, **opts)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()


@pytest.fixture
def dovecot(dovecot_factory):
    return dovecot_factory()


@pytest.fixture
def smtp_sink_factory(tls_ca, tmp_path):
    made = []

    def make(require_tls=False, username=None, password=None):
        s = harness.SmtpSink(tmp_path / ("sink%d" % len(made)), cert=tls_ca.cert,
                             key=tls_ca.key, require_tls=require_tls, username=username,
                             password=password)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


@pytest.fixture
def smtp_sink(smtp_sink_factory):
    return smtp_sink_factory()


@pytest.fixture(autouse=True)
def _kill_leftover_daemons():
    yield
    while _daemons:
        p = _daemons.pop()
        if p.poll() is None:
            p.kill()
            p.wait(10)


# ------------------------------------------------------------------- config

class Secret(str):
    """A config value written to a mode-600 file; the key gets its path."""


class Config(str):
    """The config's path (a str) with .path, .state, .dir and .feed_dir."""


def _secret_file(dir, text):
    i = 0
    while (dir / ("secret%d" % i)).exists():
        i += 1
    p = dir / ("secret%d" % i)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(text if isinstance(text, bytes) else text.encode())
    return str(p)


def write_config(tmp_path, dovecot=None, *, folder="INBOX", group="team", after="seen",
                 name="team", user=None, password=None, token=None, host=None, port=None,
                 tls=None, ca_file=None, cert_name_mismatch=False, extra="", **sections):
    tmp_path = Path(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    state = str(tmp_path / "state.db")
    if ENGINE == "postgresql":
        state = pg_state_for(tmp_path)
    feed_dir = str(tmp_path / "feeds")
    out = {"gateway": {"state": state, "reply_address": "feed@example.org",
                       "secret_file": Secret(os.urandom(32))},
           "feed": {"backend": "local", "dir": feed_dir}}
    given_feed = sections.pop("feed", None)
    raw_feed = given_feed if isinstance(given_feed, str) else None
    if raw_feed is not None:
        given_feed = None
    if given_feed and given_feed.get("backend", "local") != "local":
        out["feed"] = {}
    out["feed"].update(given_feed or {})
    out["gateway"].update(sections.pop("gateway", None) or {})
    account = sections.pop("account", {})
    mailbox = sections.pop("mailbox", {})
    if dovecot is not None:
        user = user or dovecot.user
        tls = tls or "implicit"
        if cert_name_mismatch:
            tls, port = "implicit", port or dovecot.wrong_name_port
        elif tls == "implicit":
            port = port or dovecot.imaps_port
        else:
            port = port or dovecot.imap_port
        acct = {"host": host or dovecot.host, "port": port, "tls": tls, "username": user,
                "timeout": 10}
        if tls != "none":
            acct["ca_file"] = ca_file or dovecot.ca_file
        if token is not None:
            acct["oauth2_token_file"] = Secret(token)
        else:
            acct["password_file"] = Secret(password if password is not None
                                           else dovecot.users.get(user, ""))
        acct.update(account or {})
        out["account " + user] = acct
        if mailbox is not None:
            # the tests put mail in place before the first start
            mb = {"account": user, "folder": folder, "group": group, "start": "all"}
            if after:
                mb["after"] = after
            mb.update(mailbox)
            out["mailbox " + name] = mb
    out.update(sections)
    lines = []
    for sec, keys in out.items():
        if sec == "feed" and raw_feed is not None:
            lines.append(raw_feed)
            continue
        lines.append("[%s]" % sec)
        for k, v in keys.items():
            if v is None:
                continue
            if isinstance(v, Secret) or isinstance(v, bytes):
                v = _secret_file(tmp_path, v)
            lines.append("%s = %s" % (k, v))
        lines.append("")
    lines.append(extra)
    path = tmp_path / "mailfeed.conf"
    path.write_text("\n".join(lines))
    cfg = Config(str(path))
    cfg.path, cfg.state, cfg.dir = str(path), state, str(tmp_path)
    cfg.feed_dir = cfg.feeds = feed_dir
    return cfg


# ------------------------------------------------------------------ running

def _env(env):
    e = dict(os.environ, ASAN_OPTIONS=ASAN_OPTIONS)
    e.update(env or {})
    return e


def run_mailfeed(config, *args, timeout=60, env=None, input=None):
    conf = ["-c", str(config)] if config is not None else []
    return subprocess.run([MAILFEED, *conf, *args], capture_output=True,
                          text=True, timeout=timeout, env=_env(env), input=input)


def start_daemon(config, *args, env=None):
    d = Path(getattr(config, "dir", None) or os.path.dirname(str(config)))
    i = 0
    while (d / ("daemon%d.log" % i)).exists():
        i += 1
    log_path = d / ("daemon%d.log" % i)
    with open(log_path, "wb") as log:
        p = subprocess.Popen([MAILFEED, "-c", str(config), "run", *args],
                             stdout=subprocess.DEVNULL, stderr=log, env=_env(env))
    p.log_path = str(log_path)
    _daemons.append(p)
    return p


def daemon_log(p):
    return Path(p.log_path).read_text(errors="replace")


def stop_daemon(p, sig=signal.SIGTERM, timeout=10):
    if p.poll() is None:
        p.send_signal(sig)
    try:
        rc = p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(10)
        raise AssertionError("daemon did not exit within %d s of SIGTERM:\n%s" %
                             (timeout, daemon_log(p)[-3000:]))
    log = daemon_log(p)
    assert rc == 0, "daemon exited %d:\n%s" % (rc, log[-3000:])
    assert "ERROR: AddressSanitizer" not in log and "runtime error" not in log, log[-3000:]
    return log


def state_db(config):
    """A connection to the config's state, SQLite or PostgreSQL, used the
    same way: execute(sql with ? placeholders, params) -> rows by index and
    by name; commit(); close()."""
    state = getattr(config, "state", None)
    if state is None:
        for line in Path(str(config)).read_text().splitlines():
            k, _, v = line.partition("=")
            if k.strip() == "state":
                state = v.strip()
    con = state_connect(state)
    if isinstance(con, sqlite3.Connection):
        con.row_factory = sqlite3.Row
    return con


def state_target(directory):
    """The state a test that writes its own config names: DIR/state.db, or
    with MAILFEED_TEST_ENGINE=postgresql the directory's own database."""
    if ENGINE == "postgresql":
        return pg_state_for(directory)
    return str(Path(directory) / "state.db")


def state_exists(target):
    """Whether the state named by a path or DSN has been created (a
    PostgreSQL database always exists; its tables may not yet)."""
    target = str(target)
    return target.startswith(("postgresql://", "postgres://")) or os.path.exists(target)


def state_connect(target, timeout=5.0):
    """A connection to a state named by its path or DSN, as
    sqlite3.connect(path) gives (rows as tuples; on PostgreSQL tuples that
    may also be read by column name); timeout: how long SQLite waits for a
    lock."""
    target = str(target)
    if target.startswith(("postgresql://", "postgres://")):
        return PgConnection(target)
    return sqlite3.connect(target, timeout=timeout)


# ------------------------------------------------------------------ engines
#
# MAILFEED_TEST_ENGINE=postgresql: write_config gives each test directory a
# fresh PostgreSQL database of its own (on one server for the whole run,
# started on first use) as its state instead of tmp/state.db; state_db
# reads it.  Unset or "sqlite": the SQLite file, as always.

ENGINE = os.environ.get("MAILFEED_TEST_ENGINE", "sqlite")
_pg = {"server": None, "dbs": {}}


def pg_server():
    """The run's PostgreSQL server (harness.postgres.Postgres), started on
    first use and stopped when the run ends."""
    if _pg["server"] is None:
        from harness.postgres import Postgres
        if not Postgres.available():
            pytest.skip("PostgreSQL 15 is not installed (scripts/install-deps.sh)")
        _pg["server"] = Postgres()
    _pg["server"].start()
    return _pg["server"]


def pg_state_for(directory):
    """The DSN of the database that is the state of a test directory
    (created on first use: the same directory gets the same database)."""
    key = str(directory)
    if key not in _pg["dbs"]:
        name = "s%d_%d" % (os.getpid(), len(_pg["dbs"]) + 1)
        _pg["dbs"][key] = pg_server().create_database(name)
    return _pg["dbs"][key]


def pytest_sessionfinish(session, exitstatus):
    if _pg["server"] is not None:
        _pg["server"].close()
        _pg["server"] = None


class PgRow(tuple):
    """A row read by index or by column name, like sqlite3.Row."""

    def __new__(cls, values, names):
        row = super().__new__(cls, values)
        row._names = names
        return row

    def __getitem__(self, key):
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names.index(key))
        return tuple.__getitem__(self, key)

    def keys(self):
        return list(self._names)


class PgCursor:
    def __init__(self, cur, lastrowid=None):
        self._cur = cur
        self.rowcount = cur.rowcount
        self.description = cur.description
        self.lastrowid = lastrowid

    def _row(self, r):
        names = [d[0] for d in self._cur.description]
        return PgRow([bytes(v) if isinstance(v, memoryview) else v for v in r], names)

    def fetchone(self):
        r = self._cur.fetchone() if self._cur.description else None
        return self._row(r) if r is not None else None

    def fetchall(self):
        if not self._cur.description:
            return []
        return [self._row(r) for r in self._cur.fetchall()]

    def __iter__(self):
        return iter(self.fetchall())


def _pg_sql(sql):
    """SQLite's ? placeholders as psycopg2's %s (outside quotes)."""
    out, quote = [], None
    for ch in sql:
        if quote:
            if ch == quote:
                quote = None
            out.append("%%" if ch == "%" else ch)
        elif ch in "'\"":
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


@contextlib.contextmanager
def _as_sqlite_errors():
    """PostgreSQL's errors as the sqlite3 exceptions the tests catch: a
    table not made yet (the daemon has not migrated) is an
    OperationalError, a broken constraint an IntegrityError."""
    import psycopg2
    try:
        yield
    except psycopg2.IntegrityError as e:
        raise sqlite3.IntegrityError(str(e)) from e
    except psycopg2.Error as e:
        if getattr(e, "pgcode", None) in ("42P01", "42703", "3D000"):
            raise sqlite3.OperationalError(str(e)) from e
        raise


_INSERT = re.compile(r"\s*INSERT\s+INTO\s+(\w+)\s*(?:\(([^)]*)\))?", re.I)


class PgConnection:
    """state_db's connection to a PostgreSQL state: autocommit (a test that
    reads never holds a transaction the daemon would wait on)."""

    def __init__(self, dsn):
        import psycopg2
        self._con = psycopg2.connect(dsn)
        self._con.autocommit = True

    def execute(self, sql, params=()):
        cur = self._con.cursor()
        params = [bytes(p) if isinstance(p, memoryview) else p for p in params]
        with _as_sqlite_errors():
            cur.execute(_pg_sql(sql), params or None)
            return PgCursor(cur, self._after_insert(sql))

    def executemany(self, sql, seq):
        cur = self._con.cursor()
        with _as_sqlite_errors():
            cur.executemany(_pg_sql(sql), seq)
            return PgCursor(cur, self._after_insert(sql))

    def _after_insert(self, sql):
        """What SQLite does on its own after an INSERT: rows given their id
        by the test move the table's id sequence past them (the daemon's
        next row must not take a used id), and lastrowid is the new id."""
        m = _INSERT.match(sql)
        if not m:
            return None
        table, cols = m.group(1), [c.strip().lower() for c in (m.group(2) or "").split(",")]
        cur = self._con.cursor()
        cur.execute("SELECT 1 FROM information_schema.columns WHERE table_name=%s"
                    " AND column_name='id' AND column_default LIKE 'nextval%%'", (table.lower(),))
        if not cur.fetchone():
            return None
        if "id" in cols:
            cur.execute("SELECT setval(pg_get_serial_sequence(%s, 'id'),"
                        " GREATEST((SELECT MAX(id) FROM " + table + "), 1))", (table,))
            return None
        cur.execute("SELECT currval(pg_get_serial_sequence(%s, 'id'))", (table,))
        return cur.fetchone()[0]

    def commit(self):
        pass

    def close(self):
        self._con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def wait_for(pred, timeout, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes minutes (builds a package); runs in make check")


# ---------------------------------------------------------------- PostgreSQL
#
#   postgres_server  (session) harness.postgres.Postgres: one PostgreSQL 15 on
#                    127.0.0.1 for the run (started on first use, ~3 s).
#   postgres         (function) the same server with a fresh database of the
#                    test's own: .dsn (postgresql://...), .name, .sql(query)
#                    -> rows, .server (stop/start/restart/kill; a server left
#                    stopped by a test is started again after it).  Skips when
#                    PostgreSQL is not installed.

class PgDatabase:
    def __init__(self, server, name):
        self.server, self.name = server, name
        self.dsn = server.create_database(name)

    def sql(self, query):
        return self.server.sql(query, self.name)


@pytest.fixture(scope="session")
def postgres_server():
    return pg_server()


_pg_databases = [0]


@pytest.fixture
def postgres(postgres_server):
    postgres_server.start()
    _pg_databases[0] += 1
    db = PgDatabase(postgres_server, "t%d_%d" % (os.getpid(), _pg_databases[0]))
    yield db
    postgres_server.start()
