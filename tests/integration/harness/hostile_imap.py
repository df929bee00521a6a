"""A small IMAP server on loopback that misbehaves on purpose, for the
tests of what the client does against a hostile or broken server.

It speaks enough IMAP4rev1 for mailfeed (plain TCP: the config allows
tls = none on loopback): CAPABILITY, LOGIN, AUTHENTICATE PLAIN, SELECT,
UID SEARCH, UID FETCH (UID, RFC822.SIZE, INTERNALDATE, BODY.PEEK[]),
UID STORE, UID COPY, UID MOVE, UID EXPUNGE, NOOP, IDLE, LOGOUT.  Every
attack is a switch on the instance, read at each command, so a test can
turn it on and off while a client is connected:

  lie_size = {uid: n}      RFC822.SIZE claims n, the literal is the real mail
  literal_claim = {uid: n} BODY[] announces a literal of n bytes and sends
                           what it has (then stalls)
  huge_line = "SELECT"     answers that command with an endless line
                           (huge_line_bytes of it, no CRLF)
  silent = "SELECT"        never answers that command
  drip = "SELECT"          answers that command one byte every drip_delay s
  exists_every_reply       an untagged "* N EXISTS" before every tagged reply
                           (growing when exists_grow)
  uidvalidity_churn        every SELECT reports a new UIDVALIDITY
  search_order = "reverse" UID SEARCH answers in descending order
  capabilities             the capability list (a str)
  capability_data = False  CAPABILITY answered OK without its data
  login_response           a tagged NO/BAD text for LOGIN instead of OK
  greeting                 the greeting line

Counters: .commands (list of (verb, arg text)) and .count(verb).
"""
import re
import socket
import threading
import time


class Message:
    def __init__(self, uid, raw, flags=()):
        self.uid = uid
        self.raw = raw if isinstance(raw, bytes) else raw.encode()
        self.flags = set(flags)


def parse_set(text, maxuid):
    """UIDs named by an IMAP sequence set ('*' is maxuid)."""
    out = []
    for part in text.split(","):
        if ":" in part:
            a, b = part.split(":", 1)
            a = maxuid if a == "*" else int(a)
            b = maxuid if b == "*" else int(b)
            lo, hi = min(a, b), max(a, b)
            out.append((lo, hi))
        else:
            v = maxuid if part == "*" else int(part)
            out.append((v, v))
    return out


def in_set(uid, ranges):
    return any(lo <= uid <= hi for lo, hi in ranges)


class HostileImap:
    def __init__(self, host="127.0.0.1", user="alice", password="alicepw"):
        self.host = host
        self.user, self.password = user, password
        self.folders = {"INBOX": [], "Archive": []}
        self.uidvalidity = 1000
        self.lie_size = {}
        self.literal_claim = {}
        self.huge_line = None
        self.huge_line_bytes = 200 * 1024 * 1024
        self.silent = None
        self.drip = None
        self.drip_delay = 0.5
        self.exists_every_reply = False
        self.exists_grow = False
        self.uidvalidity_churn = False
        self.search_order = "ascending"
        self.search_extra = []
        self.capabilities = "IMAP4rev1 IDLE UIDPLUS MOVE"
        self.capability_data = True
        self.login_response = None
        self.greeting = "* OK hostile test server ready"
        self.commands = []
        self.sent_bytes = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._conns = []
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    # -------------------------------------------------------------- mail
    def add(self, raw, folder="INBOX", uid=None):
        with self._lock:
            box = self.folders.setdefault(folder, [])
            if uid is None:
                uid = (box[-1].uid + 1) if box else 1
            box.append(Message(uid, raw))
            box.sort(key=lambda m: m.uid)
            return uid

    def count(self, verb):
        with self._lock:
            return sum(1 for v, _ in self.commands if v == verb.upper())

    def stop(self):
        self._stop.set()
        try:
            self._sock.close()
        except OSError:
            pass
        for c in list(self._conns):
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass
        self._thread.join(5)

    # -------------------------------------------------------------- plumbing
    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (socket.timeout, OSError):
                continue
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            Session(self, conn).run()
        except (OSError, ValueError):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass


class Session:
    def __init__(self, srv, conn):
        self.srv, self.conn = srv, conn
        self.buf = b""
        self.folder = None
        self.exists_sent = 0

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.srv.sent_bytes += len(data)
        self.conn.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.conn.recv(65536)
            if not chunk:
                raise ValueError("closed")
            self.buf += chunk
        ln, self.buf = self.buf.split(b"\r\n", 1)
        # a literal from the client (LOGIN with odd characters)
        m = re.search(rb"\{(\d+)\+?\}$", ln)
        while m:
            n = int(m.group(1))
            if not ln.endswith(b"+}"):
                self.send("+ go on\r\n")
            while len(self.buf) < n:
                self.buf += self.conn.recv(65536)
            ln = ln[:m.start()] + b'"' + self.buf[:n] + b'"'
            self.buf = self.buf[n:]
            while b"\r\n" not in self.buf:
                self.buf += self.conn.recv(65536)
            rest, self.buf = self.buf.split(b"\r\n", 1)
            ln += rest
            m = re.search(rb"\{(\d+)\+?\}$", ln)
        return ln.decode("utf-8", "replace")

    def box(self):
        return self.srv.folders.setdefault(self.folder or "INBOX", [])

    def untagged_noise(self):
        if self.srv.exists_every_reply and self.folder:
            n = len(self.box())
            if self.srv.exists_grow:
                self.exists_sent = max(self.exists_sent, n) + 1
                n = self.exists_sent
            self.send("* %d EXISTS\r\n" % n)

    def ok(self, tag, text="done"):
        self.untagged_noise()
        self.send("%s OK %s\r\n" % (tag, text))

    def attack(self, verb):
        """Carries out a line/silence attack on verb; True when it did."""
        srv = self.srv
        if srv.silent == verb:
            time.sleep(3600)
            return True
        if srv.huge_line == verb:
            chunk = b"x" * 65536
            self.send(b"* OK ")
            sent = 0
            while sent < srv.huge_line_bytes:
                self.send(chunk)
                sent += len(chunk)
            time.sleep(3600)
            return True
        return False

    def run(self):
        srv = self.srv
        self.send(srv.greeting + "\r\n")
        while True:
            ln = self.line()
            tag, _, rest = ln.partition(" ")
            verb, _, arg = rest.partition(" ")
            verb = verb.upper()
            if verb == "UID":
                sub, _, arg = arg.partition(" ")
                verb = "UID " + sub.upper()
            with srv._lock:
                srv.commands.append((verb, arg))
            if self.attack(verb):
                return
            if srv.drip == verb:
                self.drip_answer(tag)
                continue
            handler = getattr(self, "cmd_" + verb.lower().replace(" ", "_"), None)
            if handler is None:
                self.send("%s BAD unknown command\r\n" % tag)
                continue
            if handler(tag, arg) == "logout":
                return

    def drip_answer(self, tag):
        for ch in ("* OK dripping slowly\r\n%s OK done\r\n" % tag).encode():
            self.send(bytes([ch]))
            time.sleep(self.srv.drip_delay)

    # -------------------------------------------------------------- commands
    def cmd_capability(self, tag, arg):
        if self.srv.capability_data:
            self.send("* CAPABILITY %s\r\n" % self.srv.capabilities)
        self.ok(tag)

    def cmd_noop(self, tag, arg):
        self.ok(tag)

    def cmd_logout(self, tag, arg):
        self.send("* BYE\r\n")
        self.ok(tag)
        return "logout"

    def cmd_login(self, tag, arg):
        if self.srv.login_response:
            self.send("%s %s\r\n" % (tag, self.srv.login_response))
            return
        if self.srv.capability_data:
            self.send("%s OK [CAPABILITY %s] logged in\r\n" % (tag, self.srv.capabilities))
        else:
            self.send("%s OK logged in\r\n" % tag)

    def cmd_authenticate(self, tag, arg):
        if " " not in arg:
            self.send("+ \r\n")
            self.line()
        if self.srv.login_response:
            self.send("%s %s\r\n" % (tag, self.srv.login_response))
            return
        self.send("%s OK [CAPABILITY %s] logged in\r\n" % (tag, self.srv.capabilities))

    def cmd_select(self, tag, arg):
        name = arg.strip().strip('"')
        if name not in self.srv.folders:
            self.send("%s NO [NONEXISTENT] no such folder\r\n" % tag)
            return
        self.folder = name
        if self.srv.uidvalidity_churn:
            self.srv.uidvalidity += 1
        box = self.box()
        nextuid = (box[-1].uid + 1) if box else 1
        self.exists_sent = len(box)
        self.send("* %d EXISTS\r\n* 0 RECENT\r\n" % len(box))
        self.send("* OK [UIDVALIDITY %d] ok\r\n" % self.srv.uidvalidity)
        if nextuid <= 4294967295:
            self.send("* OK [UIDNEXT %d] ok\r\n" % nextuid)
        self.send("* FLAGS (\\Seen \\Deleted)\r\n")
        self.send("%s OK [READ-WRITE] selected\r\n" % tag)

    cmd_examine = cmd_select

    def cmd_uid_search(self, tag, arg):
        m = re.search(r"UID (\S+)", arg, re.I)
        box = self.box()
        maxuid = box[-1].uid if box else 0
        ranges = parse_set(m.group(1), maxuid) if m else [(1, maxuid)]
        uids = [x.uid for x in box if in_set(x.uid, ranges)] + list(self.srv.search_extra)
        if self.srv.search_order == "reverse":
            uids.sort(reverse=True)
        self.send("* SEARCH%s\r\n" % "".join(" %d" % u for u in uids))
        self.ok(tag)

    def cmd_uid_fetch(self, tag, arg):
        setspec, _, items = arg.partition(" ")
        box = self.box()
        maxuid = box[-1].uid if box else 0
        ranges = parse_set(setspec, maxuid)
        want_body = "BODY" in items.upper()
        for seq, msg in enumerate(box, 1):
            if not in_set(msg.uid, ranges):
                continue
            if want_body and "HEADER" in items.upper():
                # BODY.PEEK[HEADER]<0.N>, as a well-behaved server answers it
                head = msg.raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
                self.send(("* %d FETCH (UID %d BODY[HEADER]<0> {%d}\r\n" %
                           (seq, msg.uid, len(head))).encode() + head + b")\r\n")
                continue
            if want_body:
                claim = self.srv.literal_claim.get(msg.uid)
                if claim is not None:
                    self.send("* %d FETCH (UID %d BODY[] {%d}\r\n" % (seq, msg.uid, claim))
                    self.send(msg.raw)
                    time.sleep(3600)
                    return
                self.send(("* %d FETCH (UID %d BODY[] {%d}\r\n" %
                           (seq, msg.uid, len(msg.raw))).encode() + msg.raw + b")\r\n")
            else:
                size = self.srv.lie_size.get(msg.uid, len(msg.raw))
                self.send('* %d FETCH (UID %d RFC822.SIZE %d INTERNALDATE '
                          '"23-Nov-2026 07:00:00 +0000")\r\n' % (seq, msg.uid, size))
        self.ok(tag)

    def cmd_uid_store(self, tag, arg):
        setspec, _, rest = arg.partition(" ")
        box = self.box()
        ranges = parse_set(setspec, box[-1].uid if box else 0)
        for msg in box:
            if in_set(msg.uid, ranges):
                for f in re.findall(r"\\\w+|\$\w+", rest):
                    msg.flags.add(f)
        self.ok(tag)

    def _copy(self, arg):
        setspec, _, dest = arg.partition(" ")
        dest = dest.strip().strip('"')
        if dest not in self.srv.folders:
            return False
        box = self.box()
        ranges = parse_set(setspec, box[-1].uid if box else 0)
        for msg in list(box):
            if in_set(msg.uid, ranges):
                self.srv.add(msg.raw, dest)
        return ranges

    def cmd_uid_copy(self, tag, arg):
        if self._copy(arg) is False:
            self.send("%s NO [TRYCREATE] no such folder\r\n" % tag)
            return
        self.ok(tag)

    def cmd_uid_move(self, tag, arg):
        ranges = self._copy(arg)
        if ranges is False:
            self.send("%s NO [TRYCREATE] no such folder\r\n" % tag)
            return
        box = self.box()
        box[:] = [m for m in box if not in_set(m.uid, ranges)]
        self.ok(tag)

    def cmd_uid_expunge(self, tag, arg):
        box = self.box()
        ranges = parse_set(arg.strip(), box[-1].uid if box else 0)
        box[:] = [m for m in box if not (in_set(m.uid, ranges) and "\\Deleted" in m.flags)]
        self.ok(tag)

    def cmd_idle(self, tag, arg):
        self.send("+ idling\r\n")
        if self.srv.exists_every_reply:
            self.untagged_noise()
        while True:
            ln = self.line()
            if ln.upper() == "DONE":
                break
        self.ok(tag)
