"""A throwaway Dovecot for the integration tests: 127.0.0.1 only, random
ports (IMAP with STARTTLS, and IMAPS), passwd-file users, Maildir homes in
its own directory, started in its own process group so one signal stops
every child.  Optional: an OAuth2 introspection stub (XOAUTH2 /
OAUTHBEARER logins with tokens), a replaced post-login capability list
(to exercise fallbacks without MOVE/UIDPLUS), and a TLS relay whose
certificate names another host (host-name mismatch tests).

Runs as root (mail files owned by MAIL_UID, doveadm switches to it) or as
an ordinary user (everything owned by that user)."""
import grp
import itertools
import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAIL_UID = 4242
MAIL_GID = 4242
DEFAULT_USERS = {"alice": "alicepw", "bob": "bobpw"}
DEFAULT_TOKENS = {"tok-alice": "alice", "tok-bob": "bob"}
# bulk_import's calls in this process, counted in every file name: two calls
# within one second must not make the same name (Dovecot knows a message by
# its file name: a new file under a name it knows replaced that message's
# content under its old UID, and the new mail never showed up)
_DELIVERIES = itertools.count(1)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Introspection:
    """Dovecot's oauth2 passdb POSTs token=...; we answer active + username."""

    def __init__(self, tokens):
        self.tokens = dict(tokens)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = min(int(self.headers.get("Content-Length", 0)), 65536)
                body = self.rfile.read(n).decode(errors="replace")
                tok = urllib.parse.parse_qs(body).get("token", [""])[0]
                user = owner.tokens.get(tok)
                data = json.dumps({"active": True, "username": user} if user
                                  else {"active": False}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, fmt, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class _TlsRelay:
    """Accepts TLS with a given certificate and relays the plain bytes to
    Dovecot's IMAP port: a server whose certificate names another host."""

    def __init__(self, cert, key, target_port):
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(cert, key)
        self.target = target_port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(10)
            t = self.ctx.wrap_socket(c, server_side=True)
            t.settimeout(None)
            up = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            up.settimeout(None)
        except (OSError, ssl.SSLError):
            c.close()
            return
        self.conns += [t, up]

        def pump(a, b):
            try:
                while True:
                    d = a.recv(65536)
                    if not d:
                        break
                    b.sendall(d)
            except OSError:
                pass
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        threading.Thread(target=pump, args=(up, t), daemon=True).start()
        pump(t, up)

    def stop(self):
        self.stopping = True
        self.sock.close()
        for s in self.conns:
            try:
                s.close()
            except OSError:
                pass


class Dovecot:
    """One Dovecot instance.  Attributes: host ("127.0.0.1"), imap_port /
    port_imap (plain, STARTTLS offered), imaps_port / port_imaps, ca_file,
    other_ca_file (unrelated CA), conf (path), dir, users {name: password},
    user / password (alice's, for one-user callers).  Dovecot also listens
    on mismatch_host (127.0.0.2, not in the certificate).  wrong_name_port
    starts a relay with a certificate for imap.example.org on first use.
    dir: where to live (default: a new temporary directory); extra: raw
    configuration text added to dovecot.conf."""

    host = "127.0.0.1"
    mismatch_host = "127.0.0.2"

    def __init__(self, tls_ca, users=None, oauth2=False, imap_capability=None,
                 idle_notify="2 mins", dir=None, extra=""):
        self.tls = tls_ca
        self.ca_file = tls_ca.ca_file
        self.other_ca_file = tls_ca.other_ca_file
        self.users = dict(users or DEFAULT_USERS)
        self.user = "alice" if "alice" in self.users else next(iter(self.users))
        self.password = self.users[self.user]
        self.root = os.geteuid() == 0
        if dir is None:
            dir = tempfile.mkdtemp(prefix="mf-dovecot-")
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)  # the mail uid must reach the homes
        for d in ("run", "state", "home"):
            (self.dir / d).mkdir(exist_ok=True)
        if self.root:
            os.chown(self.dir / "home", MAIL_UID, MAIL_GID)
        self.conf = str(self.dir / "dovecot.conf")
        self.log = str(self.dir / "dovecot.log")
        self.opts = {"oauth2": oauth2, "imap_capability": imap_capability,
                     "idle_notify": idle_notify, "extra": extra}
        self.oauth = _Introspection(DEFAULT_TOKENS) if oauth2 else None
        self.proc = None
        self._relay = None
        self._write_users()
        self._start_with_retries()

    # -------------------------------------------------------------- setup

    def _write_users(self):
        with open(self.dir / "users", "w") as f:
            for u, pw in self.users.items():
                f.write("%s:{PLAIN}%s\n" % (u, pw))

    def _write_conf(self):
        if self.root:
            muid, mgid, lu, iu, ig = MAIL_UID, MAIL_GID, "dovenull", "dovecot", "dovecot"
        else:
            muid, mgid = os.getuid(), os.getgid()
            lu = iu = pwd.getpwuid(muid).pw_name
            ig = grp.getgrgid(mgid).gr_name
        d = self.dir
        users = d / "users"
        if self.opts["oauth2"]:
            (d / "oauth2.conf.ext").write_text(
                "introspection_mode = post\n"
                "introspection_url = http://127.0.0.1:%d/introspect\n"
                "username_attribute = username\nactive_attribute = active\n"
                "active_value = true\nforce_introspection = yes\ntimeout_msecs = 5000\n"
                % self.oauth.port)
            mechs = "plain login xoauth2 oauthbearer"
            passdb = ("passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
                      "  args = %s/oauth2.conf.ext\n}\n"
                      "passdb {\n  driver = passwd-file\n  mechanisms = plain login\n"
                      "  args = scheme=PLAIN username_format=%%u %s\n}\n" % (d, users))
        else:
            mechs = "plain login"
            passdb = ("passdb {\n  driver = passwd-file\n"
                      "  args = scheme=PLAIN username_format=%%u %s\n}\n" % users)
        caps = ""
        if self.opts["imap_capability"]:
            caps = "protocol imap {\n  imap_capability = %s\n}\n" % self.opts["imap_capability"]
        chroots = "".join("service %s {\n  chroot =\n}\n" % s for s in
                          ("anvil", "pop3-login", "submission-login", "imap-urlauth-login"))
        text = f"""base_dir = {d}/run
state_dir = {d}/state
log_path = {self.log}
instance_name = mftest-{self.imap_port}
protocols = imap
listen = 127.0.0.1, 127.0.0.2
ssl = yes
ssl_cert = <{self.tls.cert}
ssl_key = <{self.tls.key}
ssl_min_protocol = TLSv1.2
auth_mechanisms = {mechs}
auth_failure_delay = 0
first_valid_uid = {muid}
first_valid_gid = {mgid}
default_login_user = {lu}
default_internal_user = {iu}
default_internal_group = {ig}
{passdb}userdb {{
  driver = static
  args = uid={muid} gid={mgid} home={d}/home/%u allow_all_users=yes
}}
mail_location = maildir:~/Maildir
mail_fsync = never
mail_max_userip_connections = 200
imap_idle_notify_interval = {self.opts["idle_notify"]}
namespace inbox {{
  inbox = yes
  mailbox Archive {{
    auto = create
    special_use = \\Archive
  }}
}}
{caps}{self.opts["extra"]}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1, 127.0.0.2
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1, 127.0.0.2
    port = {self.imaps_port}
    ssl = yes
  }}
}}
{chroots}"""
        Path(self.conf).write_text(text)

    def _start_with_retries(self):
        for _attempt in range(5):
            self.imap_port, self.imaps_port = free_port(), free_port()
            if self._start():
                return
        raise RuntimeError("dovecot did not start:\n" + self.log_text()[-3000:])

    def _start(self):
        """Writes the conf, starts Dovecot, waits for a real LOGIN; False
        when the ports were taken meanwhile (retry with others)."""
        self._write_conf()
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(["dovecot", "-F", "-c", self.conf], stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._reap()
                if "Address already in use" in self.log_text():
                    return False
                raise RuntimeError("dovecot exited at start:\n" + self.log_text()[-3000:])
            if self._login_works():
                return True
            time.sleep(0.02)
        self._kill()
        raise RuntimeError("dovecot not ready within 15 s:\n" + self.log_text()[-3000:])

    def _login_works(self):
        try:
            with socket.create_connection(("127.0.0.1", self.imap_port), timeout=2) as s:
                f = s.makefile("rwb")
                if not f.readline().startswith(b"* OK"):
                    return False
                f.write(b"a LOGIN %s %s\r\n" % (self.user.encode(), self.password.encode()))
                f.flush()
                while True:
                    line = f.readline()
                    if not line:
                        return False
                    if line.startswith(b"a "):
                        ok = line.startswith(b"a OK")
                        f.write(b"b LOGOUT\r\n")
                        f.flush()
                        return ok
        except OSError:
            return False

    def _kill(self):
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        self._reap()

    def _reap(self):
        """Waits until the master and every child of its group are gone."""
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        self.proc = None

    # ----------------------------------------------------------- control

    def log_text(self):
        try:
            return Path(self.log).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def restart(self, **opts):
        """Stops and starts again on the same ports with the same mail.
        opts may change oauth2 / imap_capability / idle_notify."""
        self._kill()
        if "oauth2" in opts and opts["oauth2"] and not self.oauth:
            self.oauth = _Introspection(DEFAULT_TOKENS)
        self.opts.update(opts)
        if not self._start():
            raise RuntimeError("dovecot could not get its ports back")

    def stop(self):
        """Stops every process and removes the directory.  Idempotent."""
        self._kill()
        if self._relay:
            self._relay.stop()
            self._relay = None
        if self.oauth:
            self.oauth.stop()
            self.oauth = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def free_port(self):
        return free_port()

    @property
    def port_imap(self):
        return self.imap_port

    @property
    def port_imaps(self):
        return self.imaps_port

    @property
    def wrong_name_port(self):
        """IMAPS port whose certificate (same CA) names only imap.example.org."""
        if self._relay is None:
            self._relay = _TlsRelay(self.tls.wrong_cert, self.tls.wrong_key, self.imap_port)
        return self._relay.port

    def add_user(self, name, password):
        """New user; the passwd-file is read on every login, no reload."""
        self.users[name] = password
        self._write_users()

    def add_token(self, token, user):
        """Makes `token` a valid OAuth2 bearer token for user (oauth2=True)."""
        self.oauth.tokens[token] = user

    def revoke_token(self, token):
        self.oauth.tokens.pop(token, None)

    # -------------------------------------------------------------- mail

    def doveadm(self, *args, input=None):
        r = subprocess.run(["doveadm", "-c", self.conf, *args], input=input,
                           capture_output=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("doveadm %s failed (%d): %s" %
                               (" ".join(args), r.returncode, r.stderr.decode(errors="replace")))
        return r.stdout

    def create_folder(self, user, folder):
        """Creates and subscribes folder; one that exists already is fine."""
        if folder.upper() == "INBOX":
            return
        try:
            self.doveadm("mailbox", "create", "-s", "-u", user, folder)
        except RuntimeError as e:
            if "already exists" not in str(e):
                raise

    def delete_folder(self, user, folder):
        """Deletes the folder with its messages (a later create gets a new
        UIDVALIDITY)."""
        self.doveadm("mailbox", "delete", "-s", "-u", user, folder)

    def append(self, user, folder, raw):
        """Delivers one message (bytes) unseen, as a mail client would see
        new mail; wakes IDLE clients."""
        if isinstance(raw, str):
            raw = raw.encode()
        self.doveadm("save", "-u", user, "-m", folder, input=raw)

    def _maildir(self, user, folder):
        base = self.dir / "home" / user / "Maildir"
        return base if folder.upper() == "INBOX" else base / ("." + folder.replace("/", "."))

    def bulk_import(self, user, folder, raws, internaldate=None):
        """Many messages at once, unseen, in list order: written straight
        into the folder's Maildir new/ (the folder is created if needed),
        then indexed.  INTERNALDATEs are one second apart, the last one now
        (or from internaldate, epoch seconds, for the first)."""
        self.create_folder(user, folder)
        self.status(user, folder)  # makes sure the Maildir exists
        new = self._maildir(user, folder) / "new"
        stamp = int(time.time())
        t = internaldate if internaldate is not None else stamp - len(raws)
        names = []
        delivery = next(_DELIVERIES)
        for i, raw in enumerate(raws):
            if isinstance(raw, str):
                raw = raw.encode()
            # zero-padded counters: names sort in list order, and Dovecot
            # gave UIDs in that order in every run we checked
            name = "%d.Q%06dM%06dP%d.mftest" % (stamp, delivery, i, os.getpid())
            tmp = new.parent / "tmp" / name
            tmp.write_bytes(raw)
            os.utime(tmp, (t + i, t + i))
            if self.root:
                os.chown(tmp, MAIL_UID, MAIL_GID)
            names.append(name)
        # all written first, then moved in one quick run: a client syncing
        # meanwhile sees (almost always) all of them or none
        for name in names:
            os.rename(new.parent / "tmp" / name, new / name)
        self.status(user, folder)

    def status(self, user, folder):
        """{'messages', 'uidnext', 'uidvalidity', 'unseen'} of a folder."""
        out = self.doveadm("-f", "json", "mailbox", "status", "-u", user,
                           "messages uidnext uidvalidity unseen", folder)
        row = json.loads(out)[0]
        return {k: int(v) for k, v in row.items() if k != "mailbox"}

    def set_uidvalidity(self, user, folder, value):
        self.doveadm("mailbox", "update", "-u", user, "--uid-validity", str(value), folder)

    def messages(self, user, folder):
        """[(uid, [flags], raw bytes)] in UID order; expunged ones are gone,
        \\Deleted-but-not-expunged ones are listed with that flag."""
        out = self.doveadm("-f", "json", "fetch", "-u", user, "uid flags text",
                           "mailbox", folder, "all")
        rows = json.loads(out or b"[]")
        res = [(int(r["uid"]), r["flags"].split(), r["text"].encode("utf-8", "surrogateescape"))
               for r in rows]
        return sorted(res)
