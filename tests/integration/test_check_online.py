"""`mailfeed check-config --online` as an admin runs it before the first
start: one line per check against the real servers (Dovecot, the SMTP sink,
the Chatter and Mattermost doubles), ok or the error in words, and an exit
status that says whether anything failed."""
import json
import os
import subprocess
import urllib.request

import pytest

from conftest import Secret, run_mailfeed, write_config

HERE = os.path.dirname(os.path.abspath(__file__))
CHATTER = os.path.join(HERE, "doubles", "chatter_double.py")
MATTERMOST = os.path.join(HERE, "doubles", "mattermost_double.py")
GROUP = "0F9XX0000000001AAA"        # the double's "Fundraising"
BOARD = "0F9XX0000000002AAA"
CHANNEL = "4xp9fdt77pncbef59f4k1qe83o"  # the double's "fundraising"
OTHER_CHANNEL = "8d3kq9wz1ptb5fjhx6yrcmne4a"
MM_TOKEN = "xq7k3m9p2w8r4t6y1u5i0o3a7s"


def lines(r):
    return r.stdout.splitlines()


def line(r, prefix):
    found = [l for l in lines(r) if l.startswith(prefix)]
    assert len(found) == 1, (prefix, r.stdout, r.stderr)
    return found[0]


class Double:
    def __init__(self, script, *args):
        self.proc = subprocess.Popen(["/usr/bin/python3", script, *args],
                                     stdout=subprocess.PIPE, text=True)
        self.base = "http://127.0.0.1:%d" % int(self.proc.stdout.readline())

    def control(self, **c):
        req = urllib.request.Request(self.base + "/__control", data=json.dumps(c).encode(),
                                     method="POST")
        urllib.request.urlopen(req).read()

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


@pytest.fixture
def chatter(tmp_path):
    key, pub = tmp_path / "key.pem", tmp_path / "pub.pem"
    subprocess.run(["/usr/bin/openssl", "genrsa", "-out", str(key), "2048"], check=True,
                   capture_output=True)
    os.chmod(key, 0o600)
    subprocess.run(["/usr/bin/openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)],
                   check=True, capture_output=True)
    d = Double(CHATTER, "--public-key", str(pub))
    d.key = str(key)
    yield d
    d.stop()


@pytest.fixture
def mattermost():
    d = Double(MATTERMOST, "--token", MM_TOKEN)
    yield d
    d.stop()


def smtp_section(sink, tls_ca, password):
    return {"url": f"smtp://127.0.0.1:{sink.port}", "from": "Feed <feed@example.org>",
            "username": "relay", "password_file": Secret(password),
            "ca_file": tls_ca.ca_file}


def test_all_good(tmp_path, dovecot, smtp_sink_factory, tls_ca):
    dovecot.create_folder("alice", "Team")
    sink = smtp_sink_factory(username="relay", password="relaypw")
    conf = write_config(tmp_path, dovecot, folder="Team",
                        smtp=smtp_section(sink, tls_ca, "relaypw"),
                        replies={"account": "alice", "folder": "INBOX"})
    r = run_mailfeed(conf, "check-config", "--online")
    assert r.returncode == 0, r.stdout + r.stderr
    acct = f"account alice ({dovecot.host}:{dovecot.imaps_port}): ok, logged in"
    assert line(r, "account alice") == acct
    assert line(r, "mailbox team") == "mailbox team (folder Team of account alice): ok, 0 messages"
    assert line(r, "replies") == "replies (folder INBOX of account alice): ok"
    assert line(r, "feed local") == f"feed local (directory {conf.feeds}): ok, will be created " \
                                    f"in {tmp_path}"
    assert line(r, "smtp") == f"smtp (smtp://127.0.0.1:{sink.port}): ok, logged in"
    assert lines(r)[-1] == "0 checks failed"
    assert not sink.messages(), "a check must not send mail"


def test_broken_servers(tmp_path, dovecot, smtp_sink_factory, tls_ca):
    """A wrong IMAP password, a folder that does not exist, a relay that
    refuses the password and one that does not answer: each its own line."""
    dovecot.create_folder("alice", "Team")
    sink = smtp_sink_factory(username="relay", password="relaypw")
    conf = write_config(tmp_path / "a", dovecot, folder="Missing",
                        smtp=smtp_section(sink, tls_ca, "wrong"))
    r = run_mailfeed(conf, "check-config", "--online")
    assert r.returncode == 1, r.stdout + r.stderr
    assert line(r, "account alice").endswith(": ok, logged in")
    m = line(r, "mailbox team")
    assert m.startswith("mailbox team (folder Missing of account alice): FAILED: "), m
    assert "Missing" in m
    s = line(r, "smtp")
    assert s.startswith(f"smtp (smtp://127.0.0.1:{sink.port}): FAILED: ") and "535" in s, s
    assert lines(r)[-1] == "2 checks failed"

    conf = write_config(tmp_path / "b", dovecot, folder="Team", password="not-the-password",
                        smtp=dict(smtp_section(sink, tls_ca, "relaypw"),
                                  url="smtp://127.0.0.1:%d" % dovecot.free_port()))
    r = run_mailfeed(conf, "check-config", "--online")
    assert r.returncode == 1
    a = line(r, "account alice")
    assert ": FAILED: " in a and "password" in a.lower(), a
    assert line(r, "mailbox team") == "mailbox team (folder Team of account alice): FAILED: " \
                                      "not checked: the account's login failed"
    assert ": FAILED: " in line(r, "smtp")
    assert lines(r)[-1] == "3 checks failed"
    assert "not-the-password" not in r.stdout + r.stderr


def chatter_feed(d, **kw):
    f = {"backend": "chatter", "instance_url": d.base, "login_url": d.base,
         "client_id": "3MVG9TESTCLIENT", "private_key_file": d.key,
         "username": "integration@acme.example"}
    f.update(kw)
    return f


def test_chatter_groups(tmp_path, dovecot, chatter):
    chatter.control(group_visibility={BOARD: "PrivateAccess"}, group_roles={BOARD: "NotAMember"},
                    groups={"0F9XX0000000003AAA": "Old"}, archived_groups=["0F9XX0000000003AAA"])
    for f in ("B", "O", "T"):
        dovecot.create_folder("alice", f)
    conf = write_config(tmp_path, dovecot, group=GROUP, feed=chatter_feed(chatter), **{
        "mailbox board": {"account": "alice", "folder": "B", "group": BOARD},
        "mailbox old": {"account": "alice", "folder": "O", "group": "0F9XX0000000003AAA"},
        "mailbox typo": {"account": "alice", "folder": "T", "group": "0F9XX0000000009AAA"}})
    r = run_mailfeed(conf, "check-config", "--online")
    assert r.returncode == 1, r.stdout + r.stderr
    assert line(r, "feed chatter") == f"feed chatter ({chatter.base}): ok, logged in as " \
                                      f"integration@acme.example at {chatter.base}"
    assert line(r, f"group {GROUP}") == f'group {GROUP} (mailbox team): ok, "Fundraising"'
    assert line(r, f"group {BOARD}") == \
        f"group {BOARD} (mailbox board): FAILED: integration@acme.example is not a member " \
        f'of the private group "Board": add it to the group'
    assert line(r, "group 0F9XX0000000003AAA") == \
        'group 0F9XX0000000003AAA (mailbox old): FAILED: group "Old" is archived: Chatter ' \
        'refuses new posts'
    assert line(r, "group 0F9XX0000000009AAA") == \
        "group 0F9XX0000000009AAA (mailbox typo): FAILED: chatter group: NOT_FOUND: The " \
        "requested resource does not exist"
    assert lines(r)[-1] == "3 checks failed"

    # the integration user not allowed to log in: every group unchecked
    conf = write_config(tmp_path / "b", dovecot, group=GROUP,
                        feed=chatter_feed(chatter, client_id="3MVG9WRONG"))
    r = run_mailfeed(conf, "check-config", "--online")
    assert r.returncode == 1
    f = line(r, "feed chatter")
    assert ": FAILED: " in f and "invalid_client_id" in f, f
    assert line(r, f"group {GROUP}").endswith(
        "FAILED: not checked: the login at the feed service failed")


def test_mattermost_channels(tmp_path, dovecot, mattermost):
    mattermost.control(not_member=[OTHER_CHANNEL])
    feed = {"backend": "mattermost", "url": mattermost.base + "/",
            "token_file": Secret(MM_TOKEN + "\n")}
    for f in ("B", "T"):
        dovecot.create_folder("alice", f)
    conf = write_config(tmp_path, dovecot, group=CHANNEL, feed=feed, **{
        "mailbox board": {"account": "alice", "folder": "B", "group": OTHER_CHANNEL},
        "mailbox typo": {"account": "alice", "folder": "T",
                         "group": "zzzzzzzzzzzzzzzzzzzzzzzzzz"}})
    r = run_mailfeed(conf, "check-config", "--online")
    assert r.returncode == 1, r.stdout + r.stderr
    assert line(r, "feed mattermost") == f"feed mattermost ({mattermost.base}/): ok, logged in " \
                                         f"as mailfeed-bot at {mattermost.base}"
    assert line(r, f"group {CHANNEL}") == f'group {CHANNEL} (mailbox team): ok, "Fundraising"'
    b = line(r, f"group {OTHER_CHANNEL}")
    assert b.startswith(f'group {OTHER_CHANNEL} (mailbox board): FAILED: the token\'s user is '
                        f'not a member of channel "Board": add it to the channel'), b
    t = line(r, "group zzzz")
    assert "FAILED: mattermost channel: HTTP 404 app.channel.get.existing.app_error" in t, t
    assert lines(r)[-1] == "2 checks failed"
    assert MM_TOKEN not in r.stdout + r.stderr

    mattermost.control(expire_tokens=True)
    r = run_mailfeed(conf, "check-config", "--online")
    f = line(r, "feed mattermost")
    assert ": FAILED: mattermost login: HTTP 401" in f, f


def test_webhook_is_not_asked(tmp_path, dovecot):
    feed = {"backend": "webhook", "url": "https://hooks.example.org/in",
            "secret_file": Secret(os.urandom(32))}
    conf = write_config(tmp_path, dovecot, feed=feed)
    r = run_mailfeed(conf, "check-config", "--online")
    assert r.returncode == 0, r.stdout + r.stderr
    assert line(r, "feed webhook") == "feed webhook (https://hooks.example.org/in): ok, not " \
                                      "checked: a webhook cannot be asked without posting to it"
