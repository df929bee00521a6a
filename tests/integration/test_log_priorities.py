"""Logs an operator can filter: each event carries its priority and the
mailbox, UID, item and group it concerns, to the journal when stderr is the
journal, else as text or JSON lines.  journald is stood in for by a datagram
socket at its native protocol path, read back here."""
import json
import os
import socket
import struct
import subprocess
import threading

import pytest

from conftest import MAILFEED, _env, write_config

JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
JOURNAL_DIR = "/run/systemd/journal"
JOURNAL_SOCKET = JOURNAL_DIR + "/socket"


def failing_config(tmp_path, dovecot, **kw):
    """Two accounts: alice's password is wrong, bob's works and has mail."""
    dovecot.create_folder("bob", "Team")
    dovecot.append("bob", "Team", b"From: Carol <carol@example.org>\r\nTo: team@example.org\r\n"
                   b"Subject: Agenda\r\nMessage-ID: <a1@example.org>\r\n"
                   b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nThe agenda is ready.\r\n")
    return write_config(tmp_path, dovecot, password="wrong", name="broken", extra=f"""
[account bob]
host = {dovecot.host}
port = {dovecot.imaps_port}
tls = implicit
ca_file = {dovecot.ca_file}
username = bob
password_file = {tmp_path}/bob.pass
timeout = 10

[mailbox team]
account = bob
folder = Team
group = team-group
after = keep
start = all
""", **kw)


def bob_password(tmp_path, dovecot):
    p = tmp_path / "bob.pass"
    p.write_text(dovecot.users["bob"] + "\n")
    p.chmod(0o600)


def run_once(conf, stderr_path, env=None):
    with open(stderr_path, "wb") as err:
        st = os.fstat(err.fileno())
        e = _env(env)
        if env is not None and env.get("JOURNAL_STREAM") == "match":
            e["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        r = subprocess.run([MAILFEED, "-c", str(conf), "run", "--once"], stderr=err,
                           stdout=subprocess.PIPE, env=e, timeout=120)
    return r.returncode, stderr_path.read_text()


def test_json_lines(tmp_path, dovecot):
    bob_password(tmp_path, dovecot)
    conf = failing_config(tmp_path, dovecot, gateway={"log_format": "json"})
    rc, text = run_once(conf, tmp_path / "err.log")
    assert rc == 1
    events = [json.loads(l) for l in text.splitlines() if l.startswith("{")]
    assert events and len(events) == len([l for l in text.splitlines() if l.strip()]), text
    errors = [e for e in events if e["priority"] <= 3]
    assert errors and all(e["level"] == "error" and e["MAILBOX"] == "broken" for e in errors), \
        errors
    assert all("login" in e["msg"] or "password" in e["msg"] for e in errors), errors
    # the working mailbox's routine events are info, with their mailbox
    team = [e for e in events if e.get("MAILBOX") == "team" and e["event"].startswith("imap.")]
    assert team and all(e["priority"] == 6 and e["level"] == "info" for e in team), events
    assert {e["priority"] for e in events} <= {3, 4, 5, 6}


def test_text_lines_name_the_level(tmp_path, dovecot):
    bob_password(tmp_path, dovecot)
    conf = failing_config(tmp_path, dovecot)
    rc, text = run_once(conf, tmp_path / "err.log")
    assert rc == 1
    lines = [l for l in text.splitlines() if l.strip()]
    assert all(l.startswith("level=") for l in lines), text
    assert any(l.startswith("level=error imap.") and "mailbox=broken" in l for l in lines)


class FakeJournal:
    """A datagram socket where libsystemd sends native journal entries."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(JOURNAL_SOCKET)
        self.sock.settimeout(0.2)
        self.entries = []
        self.stop = False
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        while not self.stop:
            try:
                data = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            self.entries.append(parse_native(data))

    def close(self):
        self.stop = True
        self.t.join()
        self.sock.close()
        os.unlink(JOURNAL_SOCKET)


def parse_native(data):
    """KEY=value lines, or KEY, a 64-bit little-endian length and the value."""
    out, i = {}, 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            i = nl + 1
        else:
            k = line
            (n,) = struct.unpack("<Q", data[nl + 1:nl + 9])
            v = data[nl + 9:nl + 9 + n]
            i = nl + 9 + n + 1
        out[k.decode()] = v.decode("utf-8", "replace")
    return out


@pytest.fixture
def fake_journal():
    if os.path.exists(JOURNAL_SOCKET):
        pytest.skip("a journald runs here; its socket is not ours to replace")
    made = not os.path.isdir(JOURNAL_DIR)
    try:
        os.makedirs(JOURNAL_DIR, exist_ok=True)
        j = FakeJournal()
    except OSError as e:
        pytest.skip(f"cannot stand in for journald: {e}")
    yield j
    j.close()
    if made:
        os.rmdir(JOURNAL_DIR)


def test_journal_priorities_and_fields(tmp_path, dovecot, fake_journal):
    bob_password(tmp_path, dovecot)
    conf = failing_config(tmp_path, dovecot, gateway={"log_format": "json"})
    rc, text = run_once(conf, tmp_path / "err.log", env={"JOURNAL_STREAM": "match"})
    assert rc == 1
    assert text.strip() == "", "with stderr the journal, events go through the journal API"
    entries = fake_journal.entries
    assert entries and all(e["SYSLOG_IDENTIFIER"] == "mailfeed" for e in entries)
    # journalctl -p err: exactly the failures of the broken mailbox
    err = [e for e in entries if int(e["PRIORITY"]) <= 3]
    assert err and all(e["MAILBOX"] == "broken" for e in err), err
    assert all(e["MAILFEED_EVENT"].startswith("imap.") for e in err), err
    team = [e for e in entries
            if e.get("MAILBOX") == "team" and e["MAILFEED_EVENT"].startswith("imap.")]
    assert team and all(e["PRIORITY"] == "6" for e in team), entries
    assert not team[0]["MESSAGE"].startswith("level=")

    # the same entries in a journal file, read back as an operator would
    if not os.access(JOURNAL_REMOTE, os.X_OK):
        pytest.skip("systemd-journal-remote is not installed")
    export = b""
    for i, e in enumerate(entries):
        export += b"__REALTIME_TIMESTAMP=%d\n__MONOTONIC_TIMESTAMP=%d\n" % (
            1764800000000000 + i, i + 1)
        export += b"_BOOT_ID=0123456789abcdef0123456789abcdef\n_SYSTEMD_UNIT=mailfeed.service\n"
        export += b"".join(b"%s=%s\n" % (k.encode(), v.encode()) for k, v in e.items()) + b"\n"
    jfile = tmp_path / "mailfeed.journal"
    subprocess.run([JOURNAL_REMOTE, "-o", str(jfile), "-"], input=export, check=True,
                   capture_output=True)

    def journalctl(*args):
        r = subprocess.run(["journalctl", "--file", str(jfile), "-o", "json", *args],
                           capture_output=True, text=True, check=True)
        return [json.loads(l) for l in r.stdout.splitlines()]

    shown = journalctl("-u", "mailfeed", "-p", "err")
    assert [j["MESSAGE"] for j in shown] == [e["MESSAGE"] for e in err]
    team = journalctl("MAILBOX=team")
    assert team and all("mailbox=team" in j["MESSAGE"] for j in team)


def test_journal_unreachable_falls_back_to_prefixes(tmp_path, dovecot):
    if os.path.exists(JOURNAL_SOCKET):
        pytest.skip("a journald runs here")
    bob_password(tmp_path, dovecot)
    conf = failing_config(tmp_path, dovecot)
    rc, text = run_once(conf, tmp_path / "err.log", env={"JOURNAL_STREAM": "match"})
    assert rc == 1
    lines = [l for l in text.splitlines() if l.strip()]
    assert lines and all(l[:3] in ("<3>", "<4>", "<5>", "<6>", "<7>") for l in lines), text
    assert any(l.startswith("<3>level=error imap.") for l in lines)
    assert any(l.startswith("<6>level=info imap.") and "mailbox=team" in l for l in lines)
