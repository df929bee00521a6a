"""Shared harness for the integration tests: a throwaway Dovecot on
127.0.0.1 (plain IMAP and IMAPS, TLS from a CA made at test time), config
writing, and running the binary under test.

Fixtures and helpers:
  tls             session: CA + server certificate (localhost, 127.0.0.1),
                  and an unrelated CA (for "untrusted" tests)
  dovecot         a fresh Dovecot per test: .host .imap_port .imaps_port
                  .ca_file .other_ca_file .mismatch_host (127.0.0.2, not in the
                  certificate), users alice/alicepw and bob/bobpw;
                  .create_folder .delete_folder .append .bulk_import
                  .messages .set_uidvalidity .restart .stop .free_port
  write_config(tmp_path, dovecot, **options) -> Cfg(.path .state .feeds)
  run_mailfeed(config, *args, timeout=60, input=None) -> CompletedProcess
  start_daemon(config) -> Popen;  stop_daemon(p) -> its log (asserts exit 0 in 10 s)
The binary is $MAILFEED_BIN (default: build/asan/mailfeed)."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MAILFEED = os.environ.get("MAILFEED_BIN", os.path.join(ROOT, "build/asan/mailfeed"))
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d, name):
    os.makedirs(d, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-days", "2", "-subj", "/CN=" + name, "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-keyout", "ca.key",
             "-out", "ca.crt", cwd=d)
    return os.path.join(d, "ca.crt")


def make_server_cert(d, names="DNS:localhost,IP:127.0.0.1"):
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr", cwd=d)
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
                % names)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "server.crt", cwd=d)
    os.chmod(os.path.join(d, "server.key"), 0o600)


class TLS:
    def __init__(self, base):
        self.dir = os.path.join(base, "tls")
        self.ca_file = make_ca(self.dir, "mailfeed-test-ca")
        make_server_cert(self.dir)
        self.cert = os.path.join(self.dir, "server.crt")
        self.key = os.path.join(self.dir, "server.key")
        self.other_ca_file = make_ca(os.path.join(base, "other"), "unrelated-ca")


@pytest.fixture(scope="session")
def tls(tmp_path_factory):
    return TLS(str(tmp_path_factory.mktemp("tls")))


DOVECOT_CONF = """base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
instance_name = mftest-{p_imap}
protocols = imap
listen = 127.0.0.1, 127.0.0.2
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
auth_mechanisms = plain login
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
first_valid_uid = {uid}
first_valid_gid = {gid}
default_login_user = {lu}
default_internal_user = {iu}
default_internal_group = {ig}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/home/%u allow_all_users=yes
}}
mail_location = maildir:~/Maildir
mail_fsync = never
mail_max_userip_connections = 200
imap_idle_notify_interval = {idle_notify}
namespace inbox {{
  inbox = yes
  mailbox Archive {{
    auto = create
    special_use = \\Archive
  }}
}}
{extra}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1, 127.0.0.2
    port = {p_imap}
  }}
  inet_listener imaps {{
    address = 127.0.0.1, 127.0.0.2
    port = {p_imaps}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service pop3-login {{
  chroot =
}}
service submission-login {{
  chroot =
}}
service imap-urlauth-login {{
  chroot =
}}
"""


class Dovecot:
    host = "127.0.0.1"
    mismatch_host = "127.0.0.2"

    def __init__(self, base, tls, extra="", idle_notify="2 mins"):
        self.dir = base
        self.tls = tls
        self.ca_file = tls.ca_file
        self.other_ca_file = tls.other_ca_file
        self.extra = extra
        self.idle_notify = idle_notify
        for sub in ("run", "state", "home"):
            os.makedirs(os.path.join(base, sub), exist_ok=True)
        with open(os.path.join(base, "users"), "w") as f:
            f.write("alice:{PLAIN}alicepw\nbob:{PLAIN}bobpw\n")
        if os.getuid() == 0:
            self.uid, self.gid = 1000, 1000
            self.lu, self.iu, self.ig = "dovenull", "dovecot", "dovecot"
            os.chown(os.path.join(base, "home"), self.uid, self.gid)
        else:
            import grp
            import pwd
            self.uid, self.gid = os.getuid(), os.getgid()
            self.lu = self.iu = pwd.getpwuid(self.uid).pw_name
            self.ig = grp.getgrgid(self.gid).gr_name
        self.conf = os.path.join(base, "dovecot.conf")
        self.proc = None
        self.imap_port = self.imaps_port = None
        self.start()

    def _write_conf(self):
        with open(self.conf, "w") as f:
            f.write(DOVECOT_CONF.format(d=self.dir, cert=self.tls.cert, key=self.tls.key,
                                        uid=self.uid, gid=self.gid, lu=self.lu, iu=self.iu,
                                        ig=self.ig, p_imap=self.imap_port,
                                        p_imaps=self.imaps_port, extra=self.extra,
                                        idle_notify=self.idle_notify))

    def start(self):
        for _attempt in range(5):
            if self.imap_port is None:
                self.imap_port, self.imaps_port = free_port(), free_port()
            self._write_conf()
            log = open(os.path.join(self.dir, "dovecot.stdout"), "ab")
            self.proc = subprocess.Popen(["dovecot", "-F", "-c", self.conf], stdout=log,
                                         stderr=log, start_new_session=True)
            log.close()
            if self._wait_ready():
                return
            self.stop()
            self.imap_port = None
        raise RuntimeError("dovecot did not start: " + self.log())

    def _wait_ready(self):
        end = time.monotonic() + 10
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.imap_port), timeout=1) as s:
                    if s.recv(100).startswith(b"* OK"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def log(self):
        try:
            with open(os.path.join(self.dir, "dovecot.log")) as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # children of the master leave with the process group
        end = time.monotonic() + 5
        while time.monotonic() < end and os.path.exists(os.path.join(self.dir, "run",
                                                                     "master.pid")):
            time.sleep(0.05)

    def restart(self):
        self.stop()
        self.start()

    def doveadm(self, *args, input=None):
        r = subprocess.run([DOVEADM, "-c", self.conf, *args], input=input,
                           capture_output=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("doveadm %s: %s" % (" ".join(args), r.stderr.decode()))
        return r.stdout.decode()

    def add_user(self, name, password):
        with open(os.path.join(self.dir, "users"), "a") as f:
            f.write("%s:{PLAIN}%s\n" % (name, password))

    def create_folder(self, user, folder):
        if folder.upper() == "INBOX":
            return
        try:
            self.doveadm("mailbox", "create", "-u", user, folder)
        except RuntimeError as e:
            if "already exists" not in str(e):
                raise

    def delete_folder(self, user, folder):
        self.doveadm("mailbox", "delete", "-u", user, "-s", folder)

    def append(self, user, folder, raw):
        """Delivers one message, unseen, waking IDLE clients."""
        self.doveadm("save", "-u", user, "-m", folder, input=raw)

    def bulk_import(self, user, folder, raws):
        """Many messages at once, written straight into the user's Maildir
        (unseen; Dovecot picks them up at the next sync)."""
        self.create_folder(user, folder)
        base = os.path.join(self.dir, "home", user, "Maildir")
        if folder.upper() != "INBOX":
            base = os.path.join(base, "." + folder.replace("/", "."))
        new = os.path.join(base, "new")
        os.makedirs(new, exist_ok=True)
        t = int(time.time()) - len(raws)
        for i, raw in enumerate(raws):
            tmp = os.path.join(base, "tmp", "%d.%06d.mftest" % (t, i))
            os.makedirs(os.path.dirname(tmp), exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(raw)
            os.utime(tmp, (t + i, t + i))
            if os.getuid() == 0:
                os.chown(tmp, self.uid, self.gid)
            os.rename(tmp, os.path.join(new, os.path.basename(tmp)))
        if os.getuid() == 0:
            for dirpath, _dirs, _files in os.walk(os.path.join(self.dir, "home", user)):
                os.chown(dirpath, self.uid, self.gid)

    def messages(self, user, folder):
        """[(uid, flags, raw)] of a folder, in UID order."""
        out = self.doveadm("fetch", "-u", user, "uid flags", "mailbox", folder)
        result = []
        uid = None
        for line in out.splitlines():
            if line.startswith("uid: "):
                uid = int(line[5:])
            elif line.startswith("flags:"):
                result.append((uid, line[6:].strip(), None))
        return result

    def status(self, user, folder):
        out = self.doveadm("mailbox", "status", "-u", user, "uidvalidity uidnext messages",
                           folder)
        return dict(kv.split("=") for kv in out.split())

    def set_uidvalidity(self, user, folder, value):
        self.doveadm("mailbox", "update", "-u", user, "--uid-validity", str(value), folder)

    def free_port(self):
        return free_port()


def dovecot_dir():
    """A directory the mail uid can enter (pytest's tmp dirs are 0700)."""
    d = tempfile.mkdtemp(prefix="mftest-dovecot-")
    os.chmod(d, 0o755)
    return d


@pytest.fixture
def dovecot(tls):
    base = dovecot_dir()
    d = Dovecot(base, tls)
    yield d
    d.stop()
    shutil.rmtree(base, ignore_errors=True)


class Cfg:
    def __init__(self, path, state, feeds):
        self.path, self.state, self.feeds = path, state, feeds


def write_config(tmp_path, dovecot, folder="INBOX", after="seen", user="alice",
                 password=None, port=None, host=None, tls="implicit", ca_file=None,
                 group="team", name="team", extra="", feed=None, **_ignored):
    """A config for one mapping of dovecot's user on the local feed."""
    tmp = str(tmp_path)
    pw = os.path.join(tmp, "imap.pass")
    with open(pw, "w") as f:
        f.write(password if password is not None else user + "pw")
    os.chmod(pw, 0o600)
    secret = os.path.join(tmp, "gateway.secret")
    with open(secret, "wb") as f:
        f.write(os.urandom(32))
    os.chmod(secret, 0o600)
    state = os.path.join(tmp, "state.db")
    feeds = os.path.join(tmp, "feeds")
    if port is None:
        port = dovecot.imaps_port if tls == "implicit" else dovecot.imap_port
    feed = feed or "[feed]\nbackend = local\ndir = %s\n" % feeds
    text = ("[gateway]\nstate = {state}\nreply_address = feed@example.org\n"
            "secret_file = {secret}\n\n{feed}\n"
            "[account {user}]\nhost = {host}\nport = {port}\ntls = {tls}\n"
            "username = {user}\npassword_file = {pw}\nca_file = {ca}\ntimeout = 10s\n\n"
            "[mailbox {name}]\naccount = {user}\nfolder = {folder}\ngroup = {group}\n"
            "after = {after}\n{extra}\n").format(
                state=state, secret=secret, feed=feed, user=user,
                host=host or dovecot.host, port=port, tls=tls, pw=pw,
                ca=ca_file or dovecot.ca_file, name=name, folder=folder, group=group,
                after=after, extra=extra)
    path = os.path.join(tmp, "mailfeed.conf")
    with open(path, "w") as f:
        f.write(text)
    return Cfg(path, state, feeds)


def run_mailfeed(config, *args, timeout=60, input=None):
    cmd = [MAILFEED] + (["-c", config] if config else []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)


def start_daemon(config, *args):
    log = open(config + ".log", "w")
    p = subprocess.Popen([MAILFEED, "-c", config, "run", *args], stdout=log, stderr=log,
                         text=True)
    p.log_path = config + ".log"
    log.close()
    return p


def stop_daemon(p, sig=signal.SIGTERM):
    if p.poll() is None:
        p.send_signal(sig)
        try:
            rc = p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise AssertionError("daemon did not stop within 10 s")
    else:
        rc = p.returncode
    with open(p.log_path) as f:
        log = f.read()
    assert rc == 0, "daemon exit %s:\n%s" % (rc, log[-3000:])
    assert "ERROR: AddressSanitizer" not in log and "runtime error" not in log, log[-3000:]
    return log
