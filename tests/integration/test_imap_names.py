"""Folder names and after-actions as an admin meets them on real servers:
a folder written in UTF-8 in the config (Förderung) is selected and used as
a move target in modified UTF-7; a move to a folder that does not exist is
an error of those messages, retried later and shown in `status`, not a
reconnect every second, also with `run --once`; a login refused for want
of TLS or for too many connections says so; LOGIN is never sent where the
server advertises LOGINDISABLED."""
import json
import os
import re
import subprocess
import time

import pytest

from conftest import (ASAN_OPTIONS, IMAPPROBE, Secret, run_mailfeed, start_daemon, stop_daemon,
                      wait_for, write_config)

PROBE = IMAPPROBE
pytestmark = pytest.mark.usefixtures("imapprobe")


def msg(i):
    return ("From: Carol <carol@example.org>\r\nTo: team@example.org\r\n"
            "Subject: Message %d\r\nMessage-ID: <n%d@example.org>\r\n"
            "Date: Mon, 23 Nov 2026 07:00:00 +0000\r\n\r\nBody %d.\r\n" % (i, i, i)).encode()


def probe(cfg, folder, *args, account="alice"):
    env = dict(os.environ, ASAN_OPTIONS=ASAN_OPTIONS)
    return subprocess.run([PROBE, str(cfg), account, folder, *args], capture_output=True,
                          text=True, timeout=60, env=env)


def hostile_config(tmp_path, srv, after="seen", **account):
    acct = {"host": "127.0.0.1", "port": srv.port, "tls": "none", "username": srv.user,
            "password_file": Secret(srv.password), "timeout": 10}
    acct.update(account)
    return write_config(tmp_path, None,
                        **{"account alice": acct,
                           "mailbox team": {"account": "alice", "folder": "INBOX",
                                            "group": "team", "after": after,
                                            "start": "all"}})


def status_of(cfg):
    r = run_mailfeed(cfg, "status", "--json")
    assert r.stdout, "status: exit %d: %s" % (r.returncode, r.stderr)
    mbs = json.loads(r.stdout)["mailboxes"]
    return mbs[0] if isinstance(mbs, list) else mbs["team"]


# ------------------------------------------------------------------ names

def test_utf8_folder_is_selected_and_used_as_move_target(dovecot, tmp_path):
    dovecot.create_folder("alice", "Förderung")
    dovecot.create_folder("alice", "Entwürfe Erledigt")
    dovecot.append("alice", "Förderung", msg(1))
    cfg = write_config(tmp_path, dovecot, folder="Förderung")
    r = probe(cfg, "Förderung", "fetch", "1", "1000000")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^uid=1 size=\d+ date=\d+ sha256=[0-9a-f]{64}$", r.stdout, re.M)
    r = probe(cfg, "Förderung", "after", "move:Entwürfe Erledigt", "1")
    assert r.returncode == 0, r.stderr
    assert len(dovecot.messages("alice", "Entwürfe Erledigt")) == 1
    assert dovecot.messages("alice", "Förderung") == []


def test_utf8_folder_through_the_daemon(dovecot, tmp_path):
    dovecot.create_folder("alice", "Förderung")
    dovecot.create_folder("alice", "Archiv März")
    cfg = write_config(tmp_path, dovecot, folder="Förderung", after="move:Archiv März")
    p = start_daemon(cfg)
    assert wait_for(lambda: status_of(cfg).get("last_ok") not in (None, "never"), 30)
    dovecot.append("alice", "Förderung", msg(2))
    assert wait_for(lambda: len(dovecot.messages("alice", "Archiv März")) == 1, 30), \
        open(p.log_path).read()[-3000:]
    log = stop_daemon(p)
    assert "cannot select" not in log


def test_check_config_refuses_a_folder_name_not_in_utf8(dovecot, tmp_path):
    cfg = write_config(tmp_path, dovecot, folder="Förderung")
    raw = open(str(cfg), "rb").read().replace("Förderung".encode(), "Förderung".encode("latin-1"))
    open(str(cfg), "wb").write(raw)
    r = run_mailfeed(cfg, "check-config")
    assert r.returncode != 0
    assert "[mailbox team] folder is not valid UTF-8" in r.stderr, r.stderr


# ------------------------------------------------------------------ after-actions

def test_move_to_missing_folder_is_an_error_of_the_message_not_a_reconnect(hostile, tmp_path):
    hostile.add(msg(1))
    cfg = hostile_config(tmp_path, hostile, after="move:Nirgendwo")
    p = start_daemon(cfg)
    assert wait_for(lambda: hostile.count("UID MOVE") >= 1, 30), open(p.log_path).read()
    time.sleep(4)
    logins = hostile.count("LOGIN")
    moves = hostile.count("UID MOVE")
    st = status_of(cfg)
    log = stop_daemon(p)
    assert logins == 1, "reconnected %d times:\n%s" % (logins, log[-3000:])
    assert moves == 1, "retried %d times within seconds" % moves
    err = st.get("last_error") or ""
    assert "1 message(s) wait for their after-action" in err, st
    assert "the folder Nirgendwo does not exist" in err, st
    assert "imap.after_refused" in log


def test_run_once_records_a_refused_after_action(hostile, tmp_path):
    hostile.add(msg(1))
    cfg = hostile_config(tmp_path, hostile, after="move:Nirgendwo")
    r = run_mailfeed(cfg, "run", "--once", timeout=120)
    assert r.returncode == 1, r.stderr
    err = status_of(cfg).get("last_error") or ""
    assert "wait for their after-action" in err and "Nirgendwo" in err, err
    # a later run does not hammer: the retry waits
    moves = hostile.count("UID MOVE")
    r = run_mailfeed(cfg, "run", "--once", timeout=120)
    assert hostile.count("UID MOVE") == moves


def test_move_without_move_extension_falls_back_to_copy(hostile, tmp_path):
    hostile.capabilities = "IMAP4rev1 IDLE UIDPLUS"
    hostile.folders["Archiv/M&AOQ-rz"] = []  # servers keep the wire form
    hostile.add(msg(1))
    cfg = hostile_config(tmp_path, hostile)
    r = probe(cfg, "INBOX", "after", "move:Archiv/März", "1")
    assert r.returncode == 0, r.stderr
    assert [a for v, a in hostile.commands if v == "UID COPY"] == ['1 "Archiv/M&AOQ-rz"'] or \
        [a for v, a in hostile.commands if v == "UID COPY"] == ["1 Archiv/M&AOQ-rz"]
    assert hostile.count("UID EXPUNGE") == 1


# ------------------------------------------------------------------ logins

@pytest.mark.parametrize("answer,words", [
    ("NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections.",
     "requires an encrypted connection"),
    ("NO [UNAVAILABLE] Maximum number of connections from user+IP exceeded",
     "too many connections for alice"),
    ("NO [AUTHENTICATIONFAILED] Authentication failed.", "check password_file"),
])
def test_refused_login_says_why(hostile, tmp_path, answer, words):
    hostile.login_response = answer
    cfg = hostile_config(tmp_path, hostile)
    r = probe(cfg, "INBOX", "fetch", "1", "1000")
    assert r.returncode == 1
    assert words in r.stderr, r.stderr
    if "password" not in words:
        assert "check password_file" not in r.stderr


def test_login_never_sent_under_logindisabled(hostile, tmp_path):
    hostile.capabilities = "IMAP4rev1 IDLE LOGINDISABLED"
    cfg = hostile_config(tmp_path, hostile, auth="login")
    r = probe(cfg, "INBOX", "fetch", "1", "1000")
    assert r.returncode == 1
    assert "LOGINDISABLED" in r.stderr, r.stderr
    assert hostile.count("LOGIN") == 0
