"""Cyrus IMAP on loopback for the integration tests, beside Dovecot.

Debian's cyrus-imapd conflicts with dovecot-imapd (both provide
imap-server), so scripts/install-deps.sh unpacks its packages with
`dpkg-deb -x` under build/cyrus (or $MAILFEED_CYRUS_ROOT) instead of
installing them.  This starts its master process in a temporary directory
as an unprivileged user (nobody), plain IMAP on a free loopback port, any
password accepted, and creates the users' mailboxes through the admin.

  c = Cyrus()            # .host, .port, .user "alice", .password
  c.create_folder(name)  # alice's folder (UTF-8 name, sent as modified UTF-7)
  c.append(folder, raw)  # a message, unseen
  c.messages(folder)     # [(uid, [flags])]
  c.stop()

Cyrus.available() says whether the unpacked binaries are there.
"""
import atexit
import imaplib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
CYRUS_ROOT = os.environ.get("MAILFEED_CYRUS_ROOT", os.path.join(ROOT, "build", "cyrus"))
BIN = os.path.join(CYRUS_ROOT, "usr", "lib", "cyrus", "bin")
LIB = os.path.join(CYRUS_ROOT, "usr", "lib", "x86_64-linux-gnu")


_runtime = None


def runtime():
    """(bin, lib) of a copy under /tmp that the unprivileged user can
    reach whatever the permissions above the checkout (a CI clone under
    /root, say); made once per process."""
    global _runtime
    if _runtime is None:
        top = tempfile.mkdtemp(prefix="mf-cyrus-bin-")
        os.chmod(top, 0o755)
        shutil.copytree(BIN, os.path.join(top, "bin"), symlinks=True)
        shutil.copytree(LIB, os.path.join(top, "lib"), symlinks=True)
        _runtime = (os.path.join(top, "bin"), os.path.join(top, "lib"))
        atexit.register(shutil.rmtree, top, True)
    return _runtime


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mutf7(name):
    """RFC 3501 modified UTF-7 (for the admin's own commands)."""
    out, run = [], []

    def flush():
        if run:
            import base64
            b = base64.b64encode("".join(run).encode("utf-16-be")).decode().rstrip("=")
            out.append("&" + b.replace("/", ",") + "-")
            run.clear()
    for ch in name:
        if 0x20 <= ord(ch) <= 0x7e:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out)


class Cyrus:
    user, password, admin = "alice", "alicepw", "cyrusadmin"

    @staticmethod
    def available():
        return os.path.exists(os.path.join(BIN, "master")) and os.path.exists(
            os.path.join(BIN, "imapd"))

    def __init__(self, capabilities_off=()):
        self.host = "127.0.0.1"
        self.port = free_port()
        bindir, libdir = runtime()
        self.dir = tempfile.mkdtemp(prefix="mf-cyrus-")
        os.chmod(self.dir, 0o755)
        runas = pwd.getpwnam("nobody")
        for sub in ("conf", "conf/socket", "conf/db", "conf/proc", "conf/log", "spool",
                    "sieve", "tmp"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        suppress = " ".join(capabilities_off)
        conf = os.path.join(self.dir, "imapd.conf")
        with open(conf, "w") as f:
            f.write(
                "configdirectory: {d}/conf\n"
                "partition-default: {d}/spool\n"
                "sievedir: {d}/sieve\n"
                "temp_path: {d}/tmp\n"
                "lmtpsocket: {d}/conf/socket/lmtp\n"
                "idlesocket: {d}/conf/socket/idle\n"
                "notifysocket: {d}/conf/socket/notify\n"
                "admins: {admin}\n"
                "cyrus_user: nobody\n"
                "sasl_pwcheck_method: alwaystrue\n"
                "sasl_mech_list: PLAIN LOGIN\n"
                "allowplaintext: yes\n"
                "altnamespace: yes\n"
                "unixhierarchysep: yes\n"
                "imapidlepoll: 1\n"
                "syslog_prefix: mailfeed-test-cyrus\n"
                "serverinfo: off\n"
                "{supp}".format(d=self.dir, admin=self.admin,
                                supp="suppress_capabilities: %s\n" % suppress if suppress
                                else ""))
        master_conf = os.path.join(self.dir, "cyrus.conf")
        with open(master_conf, "w") as f:
            f.write(
                "START {{\n  recover cmd=\"{b}/ctl_cyrusdb -r -C {c}\"\n}}\n"
                "SERVICES {{\n  imap cmd=\"{b}/imapd -C {c}\" listen=\"127.0.0.1:{p}\""
                " prefork=0 maxchild=20\n}}\n"
                "EVENTS {{\n}}\n".format(b=bindir, c=conf, p=self.port))
        for base, dirs, files in os.walk(self.dir):
            os.chown(base, runas.pw_uid, runas.pw_gid)
            for n in files:
                os.chown(os.path.join(base, n), runas.pw_uid, runas.pw_gid)
        env = dict(os.environ, LD_LIBRARY_PATH=libdir, CYRUS_VERBOSE="0")
        self.log = open(os.path.join(self.dir, "master.log"), "wb")

        def demote():
            os.setgid(runas.pw_gid)
            os.setgroups([])
            os.setuid(runas.pw_uid)
        self.proc = subprocess.Popen(
            [os.path.join(bindir, "master"), "-C", conf, "-M", master_conf, "-D",
             "-p", os.path.join(self.dir, "master.pid")],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, preexec_fn=demote,
            cwd=self.dir)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    if s.recv(100).startswith(b"* OK"):
                        break
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError("Cyrus did not start: " + self.log_text())
        if self.proc.poll() is not None:
            raise RuntimeError("Cyrus exited: " + self.log_text())
        with self._admin() as a:
            typ, data = a.create("user/%s" % self.user)
            if typ != "OK":
                raise RuntimeError("cannot create the mailbox of %s: %r" % (self.user, data))

    def log_text(self):
        try:
            return open(os.path.join(self.dir, "master.log"), errors="replace").read()[-3000:]
        except OSError:
            return ""

    def _admin(self):
        c = imaplib.IMAP4(self.host, self.port)
        c.login(self.admin, "x")
        return c

    def _user(self):
        c = imaplib.IMAP4(self.host, self.port)
        c.login(self.user, self.password)
        return c

    def create_folder(self, name):
        with self._user() as c:
            typ, data = c.create('"%s"' % mutf7(name))
            if typ != "OK":
                raise RuntimeError("CREATE %s: %r" % (name, data))

    def append(self, folder, raw):
        if isinstance(raw, str):
            raw = raw.encode()
        with self._user() as c:
            typ, data = c.append('"%s"' % mutf7(folder), None, None, raw)
            if typ != "OK":
                raise RuntimeError("APPEND %s: %r" % (folder, data))

    def messages(self, folder):
        with self._user() as c:
            typ, _ = c.select('"%s"' % mutf7(folder), readonly=True)
            if typ != "OK":
                return []
            typ, data = c.uid("FETCH", "1:*", "(FLAGS)")
            out = []
            for item in data or []:
                if not item:
                    continue
                text = item.decode() if isinstance(item, bytes) else item[0].decode()
                if "UID" not in text:
                    continue
                uid = int(text.split("UID ")[1].split()[0].rstrip(")"))
                flags = text.split("FLAGS (")[1].split(")")[0].split()
                out.append((uid, flags))
            return sorted(out)

    def stop(self):
        if getattr(self, "proc", None) and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "log", None):
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
