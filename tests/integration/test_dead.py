"""Mistakes an admin can undo: a mapping with a wrong group sends its posts
to the dead list; the messages stay unread on the server, marked
$MailfeedDead; the config is fixed, reloaded, and `dead retry` sends them
with the current mapping, after which the after-action runs.  Real Dovecot,
the Mattermost test double."""
import json
import os
import signal
import subprocess
import urllib.request

import pytest

from conftest import (Secret, run_mailfeed, start_daemon, state_db, stop_daemon, wait_for,
                      write_config)

HERE = os.path.dirname(os.path.abspath(__file__))
DOUBLE = os.path.join(HERE, "doubles", "mattermost_double.py")
CHANNEL = "4xp9fdt77pncbef59f4k1qe83o"
WRONG = "zzzzzzzzzzzzzzzzzzzzzzzzzz"
TOKEN = "xq7k3m9p2w8r4t6y1u5i0o3a7s"


@pytest.fixture
def mm():
    proc = subprocess.Popen(["/usr/bin/python3", DOUBLE, "--token", TOKEN],
                            stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())

    class Env:
        base = "http://127.0.0.1:%d" % port

        def posts(self):
            st = json.loads(urllib.request.urlopen(self.base + "/__state").read())
            return sorted(st["posts"], key=lambda p: p["create_at"])

    yield Env()
    proc.terminate()
    proc.wait()


def msg(i, subject, reply_to=None):
    extra = "In-Reply-To: <d%d@example.org>\r\n" % reply_to if reply_to is not None else ""
    return ("From: Carol Example <carol@example.org>\r\nTo: team@example.org\r\n"
            "Subject: %s\r\nMessage-ID: <d%d@example.org>\r\n%s"
            "Date: Mon, 23 Nov 2026 07:%02d:00 +0000\r\n\r\nText %d.\r\n"
            % (subject, i, extra, i, i)).encode()


def flags(dovecot):
    return [f for (_u, f, _r) in dovecot.messages("alice", "INBOX")]


def config(tmp_path, dovecot, mm, group, hashtags):
    return write_config(tmp_path, dovecot, group=group, after="seen",
                        mailbox={"hashtags": hashtags},
                        feed={"backend": "mattermost", "url": mm.base,
                              "token_file": Secret(TOKEN)})


def test_wrong_group_fixed_by_reload_then_dead_retry(dovecot, mm, tmp_path):
    dovecot.append("alice", "INBOX", msg(1, "Budget"))
    dovecot.append("alice", "INBOX", msg(2, "Re: Budget", reply_to=1))
    cfg = config(tmp_path, dovecot, mm, WRONG, "oops")
    p = start_daemon(cfg.path)

    def dead_marked():
        return "imap.marked mailbox=team keyword=$MailfeedDead count=2" in \
            open(p.log_path).read()
    assert wait_for(dead_marked, 30), open(p.log_path).read()[-3000:]
    # not marked read: a person looking at the folder sees the keyword
    for f in flags(dovecot):
        assert "\\Seen" not in f and "$MailfeedDead" in f, f
    r = run_mailfeed(cfg.path, "dead", "list")
    assert r.returncode == 0
    assert "carol@example.org" in r.stdout and "Budget" in r.stdout
    assert "permissions" in r.stdout

    # the admin fixes the group and a hashtag, reloads, retries everything
    cfg = config(tmp_path, dovecot, mm, CHANNEL, "budget")
    p.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "reload.done" in open(p.log_path).read(), 20)
    r = run_mailfeed(cfg.path, "dead", "retry", "--all", "--mailbox", "team")
    assert r.returncode == 0, r.stderr
    assert "2 dead entries queued again" in r.stdout
    assert wait_for(lambda: len(mm.posts()) == 2, 30), open(p.log_path).read()[-3000:]
    post, comment = mm.posts()
    assert post["channel_id"] == CHANNEL and comment["root_id"] == post["id"]
    assert "#budget" in post["message"] and "#oops" not in post["message"]
    # delivered now: the after-action runs and the keyword goes
    assert wait_for(lambda: all("\\Seen" in f and "$MailfeedDead" not in f
                                for f in flags(dovecot)), 30), flags(dovecot)
    # the thread moved with its post: a later reply is a comment on it
    dovecot.append("alice", "INBOX", msg(3, "Re: Budget", reply_to=1))
    assert wait_for(lambda: len(mm.posts()) == 3, 30), open(p.log_path).read()[-3000:]
    later = mm.posts()[2]
    assert later["channel_id"] == CHANNEL and later["root_id"] == post["id"], later
    stop_daemon(p)
    r = run_mailfeed(cfg.path, "dead", "list")
    assert "The dead list is empty." in r.stdout


def test_dropped_dead_item_runs_the_after_action(dovecot, mm, tmp_path):
    dovecot.append("alice", "INBOX", msg(1, "Lost cause"))
    cfg = config(tmp_path, dovecot, mm, WRONG, "x")
    r = run_mailfeed(cfg.path, "run", "--once")
    assert r.returncode == 1  # something went dead
    [f] = flags(dovecot)
    assert "\\Seen" not in f and "$MailfeedDead" in f
    con = state_db(cfg)
    [(item,)] = con.execute("SELECT id FROM outbox WHERE state='dead'").fetchall()
    con.close()
    r = run_mailfeed(cfg.path, "dead", "drop", "o%d" % item)
    assert r.returncode == 0, r.stderr
    r = run_mailfeed(cfg.path, "run", "--once")
    assert r.returncode == 0, r.stderr[-2000:]
    [f] = flags(dovecot)
    assert "\\Seen" in f and "$MailfeedDead" not in f
    assert mm.posts() == []


def test_dead_retry_usage(dovecot, tmp_path):
    cfg = write_config(tmp_path, dovecot)
    assert run_mailfeed(cfg.path, "dead", "retry", "--mailbox", "team").returncode == 2
    assert run_mailfeed(cfg.path, "dead", "drop", "--all").returncode == 2
    r = run_mailfeed(cfg.path, "dead", "retry", "--all", "--mailbox", "nosuch")
    assert r.returncode == 2 and "no [mailbox nosuch]" in r.stderr
