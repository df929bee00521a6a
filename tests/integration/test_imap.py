"""The IMAP session module (src/imap.c) against a real Dovecot, through
build/asan/tests/imapprobe: TLS implicit and STARTTLS with our own
certificate checks, the one-line connection errors, LOGIN / PLAIN /
XOAUTH2, fetching without setting \\Seen, IDLE wake-ups and the
after-actions with and without MOVE / UIDPLUS."""
import hashlib
import os
import re
import subprocess
import time

import pytest

from conftest import ASAN_OPTIONS, IMAPPROBE, write_config

PROBE = IMAPPROBE
pytestmark = pytest.mark.usefixtures("imapprobe")

NO_MOVE_NO_UIDPLUS = "IMAP4rev1 LITERAL+ SASL-IR IDLE"
NO_MOVE = "IMAP4rev1 LITERAL+ SASL-IR IDLE UIDPLUS"
NO_IDLE = "IMAP4rev1 LITERAL+ SASL-IR UIDPLUS MOVE"


def msg(i, body=None):
    body = body or "Body of message %d.\r\n" % i
    return ("From: Carol <carol@example.org>\r\nTo: team@example.org\r\n"
            "Subject: Message %d\r\nMessage-ID: <m%d@example.org>\r\n"
            "Date: Mon, 23 Nov 2026 07:00:00 +0000\r\n\r\n%s" % (i, i, body)).encode()


def probe(cfg, folder, *args, timeout=30):
    env = dict(os.environ, ASAN_OPTIONS=ASAN_OPTIONS)
    return subprocess.run([PROBE, str(cfg), "alice", folder, *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def fetched(out):
    """{uid: (size, sha256 or None)} from the probe's fetch output."""
    res = {}
    for m in re.finditer(r"^uid=(\d+) size=(\d+) date=(\d+) sha256=(\w+)$", out, re.M):
        res[int(m.group(1))] = (int(m.group(2)), None if m.group(4) == "none" else m.group(4))
    return res


def sha(raw):
    return hashlib.sha256(raw).hexdigest()


def flags(dovecot, folder):
    return {uid: f for uid, f, _raw in dovecot.messages("alice", folder)}


# ------------------------------------------------------------------ TLS + auth

@pytest.mark.parametrize("tls", ["implicit", "starttls"])
def test_tls_fetch_returns_every_message_and_sets_no_seen(dovecot, tmp_path, tls):
    dovecot.create_folder("alice", "Team")
    raws = [msg(i) for i in range(3)]
    for raw in raws:
        dovecot.append("alice", "Team", raw)
    cfg = write_config(tmp_path, dovecot, tls=tls)
    r = probe(cfg, "Team", "fetch", "1", "1000000")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^uidvalidity=[1-9]\d* uidnext=4 exists=3$", r.stdout, re.M), r.stdout
    got = fetched(r.stdout)
    assert sorted(got) == [1, 2, 3]
    for uid, raw in zip((1, 2, 3), raws):
        assert got[uid] == (len(raw), sha(raw))
    assert all("\\Seen" not in f for f in flags(dovecot, "Team").values())
    assert "tls_unverified" not in r.stderr


def test_fetch_from_uid_and_size_limit(dovecot, tmp_path):
    dovecot.create_folder("alice", "Team")
    small, big = msg(1), msg(2, body="x" * 5000 + "\r\n")
    dovecot.append("alice", "Team", small)
    dovecot.append("alice", "Team", big)
    dovecot.append("alice", "Team", msg(3))
    cfg = write_config(tmp_path, dovecot)
    r = probe(cfg, "Team", "fetch", "2", "4000")
    assert r.returncode == 0, r.stderr
    got = fetched(r.stdout)
    assert sorted(got) == [2, 3]
    assert got[2] == (len(big), None)  # too big: announced, not downloaded
    assert got[3][1] is not None
    # a start above the highest UID finds nothing (the "n:*" quirk)
    r = probe(cfg, "Team", "fetch", "10", "4000")
    assert r.returncode == 0 and fetched(r.stdout) == {}, r.stdout


def test_many_messages_come_in_uid_order(dovecot, tmp_path):
    raws = [msg(i) for i in range(250)]
    dovecot.bulk_import("alice", "Bulk", raws)
    cfg = write_config(tmp_path, dovecot)
    r = probe(cfg, "Bulk", "fetch", "1", "1000000", timeout=120)
    assert r.returncode == 0, r.stderr
    uids = [int(u) for u in re.findall(r"^uid=(\d+)", r.stdout, re.M)]
    assert uids == list(range(1, 251))
    got = fetched(r.stdout)
    assert all(got[i + 1][1] == sha(raws[i]) for i in range(250))


def logins(dv):
    """Logins seen so far, once the harness's own readiness login is in the
    log: Dovecot may write that line a moment after the login answered."""
    end = time.monotonic() + 10
    n = dv.log_text().count("Login: user=<alice>")
    while n < 1 and time.monotonic() < end:
        time.sleep(0.05)
        n = dv.log_text().count("Login: user=<alice>")
    return n


def no_credentials_sent(dv, before):
    """The refused connection ended without any auth attempt, and no login
    happened (the harness's own readiness login came before)."""
    end = time.monotonic() + 5
    while "no auth attempts" not in dv.log_text() and time.monotonic() < end:
        time.sleep(0.05)
    return "no auth attempts" in dv.log_text() and logins(dv) == before


def one_error_line(r):
    assert r.returncode == 1
    lines = [l for l in r.stderr.splitlines() if l.startswith("account ")]
    assert len(lines) == 1, r.stderr
    assert "AddressSanitizer" not in r.stderr
    return lines[0]


def test_untrusted_certificate_is_refused_before_login(dovecot, tmp_path):
    cfg = write_config(tmp_path, dovecot, ca_file=dovecot.other_ca_file)
    before = logins(dovecot)
    line = one_error_line(probe(cfg, "INBOX", "fetch", "1", "1000"))
    assert line == ("account alice: certificate of 127.0.0.1 not trusted: unable to get "
                    "local issuer certificate (set ca_file)")
    assert no_credentials_sent(dovecot, before), dovecot.log_text()


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
def test_certificate_for_another_name_is_refused(dovecot, tmp_path, tls):
    cfg = write_config(tmp_path, dovecot, host=dovecot.mismatch_host, tls=tls)
    before = logins(dovecot)
    line = one_error_line(probe(cfg, "INBOX", "fetch", "1", "1000"))
    assert line == "account alice: certificate does not match host name 127.0.0.2"
    assert no_credentials_sent(dovecot, before), dovecot.log_text()


def test_certificate_naming_only_another_host_is_refused(dovecot, tmp_path):
    cfg = write_config(tmp_path, dovecot, cert_name_mismatch=True)
    line = one_error_line(probe(cfg, "INBOX", "fetch", "1", "1000"))
    assert line == "account alice: certificate does not match host name 127.0.0.1"


def test_tls_verify_off_connects_with_a_loud_warning(dovecot, tmp_path):
    cfg = write_config(tmp_path, dovecot, ca_file=dovecot.other_ca_file,
                       account={"tls_verify": "no"})
    r = probe(cfg, "INBOX", "fetch", "1", "1000")
    assert r.returncode == 0, r.stderr
    assert "imap.tls_unverified account=alice" in r.stderr


def test_wrong_password(dovecot, tmp_path):
    cfg = write_config(tmp_path, dovecot, password="not-the-password")
    r = probe(cfg, "INBOX", "fetch", "1", "1000")
    line = one_error_line(r)
    assert line == ("account alice: login failed for alice: Authentication failed. "
                    "(check password_file)")
    assert "not-the-password" not in r.stderr + r.stdout


def test_unreachable_port(dovecot, tmp_path):
    port = dovecot.free_port()
    cfg = write_config(tmp_path, dovecot, port=port)
    line = one_error_line(probe(cfg, "INBOX", "fetch", "1", "1000"))
    assert line == "account alice: cannot connect to 127.0.0.1:%d: Connection refused" % port


def test_sasl_plain(dovecot, tmp_path):
    dovecot.append("alice", "INBOX", msg(1))
    cfg = write_config(tmp_path, dovecot, account={"auth": "plain"})
    r = probe(cfg, "INBOX", "fetch", "1", "100000")
    assert r.returncode == 0, r.stderr
    assert sorted(fetched(r.stdout)) == [1]


def test_xoauth2_token_and_bad_token(dovecot_factory, tmp_path):
    dv = dovecot_factory(oauth2=True)
    dv.append("alice", "INBOX", msg(1))
    cfg = write_config(tmp_path / "good", dv, token="tok-alice")
    r = probe(cfg, "INBOX", "fetch", "1", "100000")
    assert r.returncode == 0, r.stderr
    assert sorted(fetched(r.stdout)) == [1]
    cfg = write_config(tmp_path / "bad", dv, token="tok-expired")
    r = probe(cfg, "INBOX", "fetch", "1", "100000")
    line = one_error_line(r)
    assert line.startswith("account alice: login failed for alice: ")
    assert line.endswith("(check the OAuth2 token)")
    assert "tok-expired" not in r.stderr + r.stdout


# ------------------------------------------------------------------ waiting

def test_message_appended_while_idling_wakes_within_2s(dovecot, tmp_path):
    dovecot.create_folder("alice", "Team")
    dovecot.append("alice", "Team", msg(1))
    cfg = write_config(tmp_path, dovecot)
    env = dict(os.environ, ASAN_OPTIONS=ASAN_OPTIONS)
    p = subprocess.Popen([PROBE, str(cfg), "alice", "Team", "wait", "60"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stdout.readline().startswith("uidvalidity=")
        assert p.stdout.readline() == "ready\n"
        time.sleep(0.5)  # into IDLE
        t0 = time.monotonic()
        dovecot.append("alice", "Team", msg(2))
        out, err = p.communicate(timeout=10)
        woke = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    assert re.search(r"^wait=1 idle=1 ", out, re.M), out
    assert woke < 2.0
    assert re.findall(r"^uid=(\d+)$", out, re.M) == ["1", "2"]


def test_idle_times_out_without_news(dovecot, tmp_path):
    cfg = write_config(tmp_path, dovecot)
    r = probe(cfg, "INBOX", "wait", "1")
    assert r.returncode == 0, r.stderr
    m = re.search(r"^wait=0 idle=1 elapsed_ms=(\d+)$", r.stdout, re.M)
    assert m, r.stdout
    assert 900 <= int(m.group(1)) < 3000


def test_without_idle_it_polls(dovecot_factory, tmp_path):
    dv = dovecot_factory(imap_capability=NO_IDLE)
    cfg = write_config(tmp_path, dv, account={"poll_interval": "1"})
    r = probe(cfg, "INBOX", "wait", "30")
    assert r.returncode == 0, r.stderr
    m = re.search(r"^wait=1 idle=0 elapsed_ms=(\d+)$", r.stdout, re.M)
    assert m, r.stdout
    assert 900 <= int(m.group(1)) < 3000


# ------------------------------------------------------------ after-actions

def setup_team(dv, n=3):
    dv.create_folder("alice", "Team")
    dv.create_folder("alice", "Done")
    for i in range(n):
        dv.append("alice", "Team", msg(i))


def test_after_seen(dovecot, tmp_path):
    setup_team(dovecot)
    cfg = write_config(tmp_path, dovecot)
    r = probe(cfg, "Team", "after", "seen", "1", "3")
    assert r.returncode == 0, r.stderr
    f = flags(dovecot, "Team")
    assert "\\Seen" in f[1] and "\\Seen" in f[3] and "\\Seen" not in f[2]


@pytest.mark.parametrize("caps", [None, NO_MOVE, NO_MOVE_NO_UIDPLUS])
def test_after_move(dovecot_factory, tmp_path, caps):
    dv = dovecot_factory(imap_capability=caps)
    setup_team(dv)
    # someone else's message waiting for expunge must survive our cleanup
    dv.doveadm("flags", "add", "-u", "alice", "\\Deleted", "mailbox", "Team", "uid", "3")
    cfg = write_config(tmp_path, dv)
    r = probe(cfg, "Team", "after", "move:Done", "1", "2")
    assert r.returncode == 0, r.stderr
    done = dv.messages("alice", "Done")
    assert [raw.replace(b"\n", b"").replace(b"\r", b"") for _u, _f, raw in done] == \
        [msg(i).replace(b"\r\n", b"") for i in (0, 1)]
    left = flags(dv, "Team")
    assert 3 in left and "\\Deleted" in left[3]
    if caps == NO_MOVE_NO_UIDPLUS:
        # no UID EXPUNGE: ours are only marked, and the log says why
        assert sorted(left) == [1, 2, 3]
        assert all("\\Deleted" in left[u] for u in (1, 2))
        assert "imap.no_uidplus account=alice" in r.stderr
    else:
        assert sorted(left) == [3]


@pytest.mark.parametrize("caps", [None, NO_MOVE_NO_UIDPLUS])
def test_after_delete(dovecot_factory, tmp_path, caps):
    dv = dovecot_factory(imap_capability=caps)
    setup_team(dv)
    dv.doveadm("flags", "add", "-u", "alice", "\\Deleted", "mailbox", "Team", "uid", "3")
    cfg = write_config(tmp_path, dv)
    r = probe(cfg, "Team", "after", "delete", "2")
    assert r.returncode == 0, r.stderr
    left = flags(dv, "Team")
    if caps is None:
        assert sorted(left) == [1, 3]
    else:
        assert sorted(left) == [1, 2, 3] and "\\Deleted" in left[2]
    assert "\\Deleted" not in left[1]


def test_move_to_missing_folder_is_a_clear_error(dovecot, tmp_path):
    setup_team(dovecot)
    cfg = write_config(tmp_path, dovecot)
    r = probe(cfg, "Team", "after", "move:Nowhere", "1")
    assert r.returncode == 1
    assert "account alice: after-action move:Nowhere refused: the folder Nowhere does not exist" \
        in r.stderr, r.stderr
    assert sorted(flags(dovecot, "Team")) == [1, 2, 3]


def test_select_missing_folder_is_a_clear_error(dovecot, tmp_path):
    cfg = write_config(tmp_path, dovecot)
    r = probe(cfg, "Nowhere", "fetch", "1", "1000")
    assert r.returncode == 1
    assert "account alice: cannot select folder Nowhere: " in r.stderr


@pytest.mark.parametrize("free_below_1024", [0, 1])
def test_no_descriptor_below_1024_is_an_error_not_a_crash(dovecot, tmp_path, free_below_1024):
    # libetpan select()s on the socket and on a pipe of its own: any of
    # them numbered 1024 or more would abort the process.  With one free
    # descriptor the socket fits but the pipe would not.
    cfg = write_config(tmp_path, dovecot)

    def fill_low_descriptors():
        null = os.open("/dev/null", os.O_RDONLY)
        for fd in range(3, 1100):
            if fd != null:
                os.dup2(null, fd, inheritable=True)
        if free_below_1024:
            os.close(500)

    env = dict(os.environ, ASAN_OPTIONS=ASAN_OPTIONS)
    r = subprocess.run([PROBE, str(cfg), "alice", "INBOX", "fetch", "1", "1000"],
                       capture_output=True, text=True, timeout=30, env=env, close_fds=False,
                       preexec_fn=fill_low_descriptors)
    line = one_error_line(r)
    assert line == ("account alice: no file descriptor below 1024 left for an IMAP "
                    "connection (too many open files)")
