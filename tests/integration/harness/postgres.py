"""A throwaway PostgreSQL 15 (Debian's postgresql package) for the
integration tests: initdb in a new temporary directory, the server run as
an unprivileged user (the package's `postgres` account, else `nobody`)
when the tests run as root, TCP on 127.0.0.1 only on a free port (no Unix
socket), password logins (scram-sha-256) for the superuser "mailfeed".
fsync is off (a test server need not survive a crash of the machine; a
commit still survives a crash of the server, pg.kill()).

  pg = Postgres()              # .host, .port, .user, .password, .dir
  pg.dsn(db="mailfeed")        # postgresql://mailfeed:...@127.0.0.1:PORT/db
  pg.create_database(name)     # a fresh database, returns its DSN
  pg.sql(query, db=...)        # runs SQL through psql, returns the rows [[col, ...]]
  pg.stop() / pg.start()       # fast shutdown (clients see 57P01) / again, same port
  pg.restart(), pg.kill()      # kill: SIGKILL of the postmaster (a crash)
  pg.running()
  pg.close()                   # stop and remove everything

Postgres.available() says whether the binaries are there."""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

VERSION = os.environ.get("MAILFEED_PG_VERSION", "15")
BIN = os.environ.get("MAILFEED_PG_BIN", "/usr/lib/postgresql/%s/bin" % VERSION)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _runas():
    """The account the server runs as: PostgreSQL refuses root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("no unprivileged account (postgres or nobody) to run PostgreSQL")



def _alive(pid):
    """Whether pid runs (a zombie has let go of everything but its entry)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class Postgres:
    host = "127.0.0.1"
    user = "mailfeed"

    @staticmethod
    def available():
        return all(os.access(os.path.join(BIN, b), os.X_OK)
                   for b in ("initdb", "postgres", "pg_isready", "psql"))

    def __init__(self, port=None):
        self.port = port or _free_port()
        self.password = "pw-" + os.urandom(8).hex()
        self.dir = tempfile.mkdtemp(prefix="mf-pg-")
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "data")
        self.runas = _runas()
        self.proc = None
        self.log = None
        pwfile = os.path.join(self.dir, "pwfile")
        with open(pwfile, "w") as f:
            f.write(self.password + "\n")
        os.mkdir(self.data, 0o700)
        if self.runas:
            for p in (self.dir, self.data, pwfile):
                os.chown(p, self.runas.pw_uid, self.runas.pw_gid)
        os.chmod(pwfile, 0o600)
        r = subprocess.run(
            [os.path.join(BIN, "initdb"), "-D", self.data, "-U", self.user,
             "--pwfile", pwfile, "--auth-local=reject", "--auth-host=scram-sha-256",
             "-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions"],
            capture_output=True, text=True, preexec_fn=self._demote, cwd=self.dir,
            timeout=120)
        os.unlink(pwfile)
        if r.returncode != 0:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise RuntimeError("initdb failed: %s%s" % (r.stdout, r.stderr))
        self.start()

    def _demote(self):
        if self.runas:
            os.setgid(self.runas.pw_gid)
            os.setgroups([])
            os.setuid(self.runas.pw_uid)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _ready(self):
        r = subprocess.run([os.path.join(BIN, "pg_isready"), "-q", "-h", self.host,
                            "-p", str(self.port), "-U", self.user, "-d", "postgres"],
                           capture_output=True)
        return r.returncode == 0

    def start(self, timeout=60):
        if self.running():
            return
        self.log = open(os.path.join(self.dir, "postgres.log"), "ab")
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "postgres"), "-D", self.data, "-p", str(self.port),
             "-c", "listen_addresses=" + self.host,
             "-c", "unix_socket_directories=",
             "-c", "fsync=off",
             "-c", "full_page_writes=off", "-c", "max_connections=100",
             "-c", "shared_buffers=16MB", "-c", "log_min_messages=warning"],
            stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=self._demote,
            cwd=self.dir, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("PostgreSQL exited: " + self.log_text())
            if self._ready():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("PostgreSQL did not start: " + self.log_text())

    def stop(self, timeout=30):
        """Fast shutdown: open sessions are ended (SQLSTATE 57P01)."""
        if not self.running():
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self.log.close()

    def _children(self):
        """The postmaster's children (each runs in a session of its own)."""
        pids = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % d) as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == self.proc.pid:
                pids.append(int(d))
        return pids

    def kill(self):
        """A crash: the postmaster and every child die at once."""
        if not self.running():
            return
        pids = [self.proc.pid] + self._children()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)
        # the children are not ours to reap: wait until each is gone (or a
        # zombie), or the next start finds their shared memory still in use
        deadline = time.monotonic() + 10
        for pid in pids[1:]:
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.02)
        # a killed postmaster leaves its pid file; the next start recovers
        self.log.close()

    def restart(self):
        self.stop()
        self.start()

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self):
        try:
            with open(os.path.join(self.dir, "postgres.log"), errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def dsn(self, db="postgres"):
        return "postgresql://%s:%s@%s:%d/%s" % (self.user, self.password, self.host,
                                                self.port, db)

    def sql(self, query, db="postgres"):
        """Rows of query's result as lists of strings (NULL: "")."""
        r = subprocess.run([os.path.join(BIN, "psql"), "-X", "-q", "-A", "-t", "-F", "\t",
                            "-v", "ON_ERROR_STOP=1", "-d", self.dsn(db), "-c", query],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("psql: %s" % r.stderr)
        return [line.split("\t") for line in r.stdout.splitlines() if line]

    def create_database(self, name):
        self.sql('CREATE DATABASE "%s"' % name)
        return self.dsn(name)
