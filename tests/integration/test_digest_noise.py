"""Less noise, by email: leaving one group from its link in the digest,
muting a thread by replying "mute" to its post's address, the frequency
`mine`, and "unsubscribe" sent to the feed's own address (only a verified
sender's counts).  Real Dovecot for the replies folder, the local feed, an
SMTP sink."""
import re
import time

import pytest

from test_digest import (add_item, db, digest_reply_address, make_config, mf, needs_dovecot,
                         parts, prepare, reply_mail, run_once, sink)  # noqa: F401

AUTHSERV = "mx.example.org"


def config(dovecot, tmp_path, sink, groups="team,board"):
    extra = """
[mailbox board]
account = staff
folder = Board
group = board-group
after = keep
start = all
"""
    cfg = make_config(tmp_path, sink.port, imap_port=dovecot.imap_port, replies=True,
                      subscriber=None, extra=extra + """
[subscriber bob@example.org]
groups = %s
frequency = daily
""" % groups)
    text = open(cfg.path).read().replace("[gateway]\n", "[gateway]\ntrusted_authserv = %s\n"
                                         % AUTHSERV, 1)
    open(cfg.path, "w").write(text)
    for f in ("Team", "Board", "Replies"):
        dovecot.create_folder("alice", f)
    prepare(cfg)
    return cfg


def verified(domain="example.org"):
    return "Authentication-Results: %s; dmarc=pass header.from=%s\r\n" % (AUTHSERV, domain)


def digest_now(cfg, sink):
    n = len(sink.messages())
    r = mf(cfg, "digest", "--now")
    assert r.returncode == 0, r.stderr
    new = sink.messages()[n:]
    return [m for _, m, _ in new]


def reset_period(cfg):
    con = db(cfg)
    con.execute("UPDATE subscribers SET last_sent=?", (int(time.time()) - 30,))
    con.commit()
    con.close()


@needs_dovecot
def test_leave_one_group_from_the_digest(dovecot, tmp_path, sink):
    cfg = config(dovecot, tmp_path, sink)
    add_item(cfg, "t1", "Team news", subject="Team")
    add_item(cfg, "b1", "Board news", subject="Board", grp="board-group")
    mails = digest_now(cfg, sink)
    text, html = parts(mails[0])
    leave = re.search(r"Leave board: mailto:(feed\+[a-z2-7]+@example\.org)\?subject="
                      r"unsubscribe%20board", text)
    assert leave, text
    assert "Leave team: mailto:" in text and "Leave board</a>" in html
    dovecot.append("alice", "Replies", reply_mail(leave.group(1), "bob@example.org",
                                                  "unsubscribe board", "", verified()))
    run_once(cfg)
    con = db(cfg)
    assert con.execute("SELECT groups, frequency FROM subscribers").fetchone() == \
        ("team", "daily")
    con.close()
    answer = [m for _, m, _ in sink.messages() if m["Subject"] == "Your digest subscription"]
    assert len(answer) == 1 and 'You left "board"' in answer[0].get_content()
    # the next digest: the team only
    reset_period(cfg)
    add_item(cfg, "t2", "More team news", subject="Team again")
    add_item(cfg, "b2", "More board news", subject="Board again", grp="board-group")
    text, _ = parts(digest_now(cfg, sink)[0])
    assert "More team news" in text and "More board news" not in text


@needs_dovecot
def test_mute_and_unmute_a_thread(dovecot, tmp_path, sink):
    cfg = config(dovecot, tmp_path, sink, groups="team")
    post, addr = digest_reply_address(cfg, sink)
    other = add_item(cfg, "o1", "Another thread", subject="Other")
    dovecot.append("alice", "Replies", reply_mail(addr, "bob@example.org", "mute", "",
                                                  verified()))
    run_once(cfg)
    con = db(cfg)
    assert con.execute("SELECT COUNT(*) FROM mutes WHERE email='bob@example.org'"
                       ).fetchone()[0] == 1
    con.close()
    reset_period(cfg)
    add_item(cfg, "c1", "A comment in the muted thread", parent=post)
    add_item(cfg, "c2", "A comment elsewhere", parent=other)
    text, _ = parts(digest_now(cfg, sink)[0])
    assert "A comment elsewhere" in text and "muted thread" not in text
    # unmute: the thread comes back
    dovecot.append("alice", "Replies", reply_mail(addr, "bob@example.org", "unmute", "",
                                                  verified()))
    run_once(cfg)
    reset_period(cfg)
    add_item(cfg, "c3", "Back in the thread", parent=post)
    text, _ = parts(digest_now(cfg, sink)[0])
    assert "Back in the thread" in text


@needs_dovecot
def test_frequency_mine(dovecot, tmp_path, sink):
    cfg = config(dovecot, tmp_path, sink, groups="team")
    _post, addr = digest_reply_address(cfg, sink)
    dovecot.append("alice", "Replies", reply_mail(addr, "bob@example.org", "mine", "",
                                                  verified()))
    run_once(cfg)
    con = db(cfg)
    assert con.execute("SELECT frequency FROM subscribers").fetchone()[0] == "mine"
    con.close()
    reset_period(cfg)
    started = add_item(cfg, "m1", "Bob's own question", subject="Mine",
                       author=("Bob", "bob@example.org"))
    add_item(cfg, "m2", "An answer to Bob", parent=started)
    elsewhere = add_item(cfg, "m3", "Someone else's thread", subject="Not mine")
    add_item(cfg, "m4", "bob@example.org should look at this", parent=elsewhere)
    add_item(cfg, "m5", "Nothing about Bob here", subject="Unrelated")
    text, _ = parts(digest_now(cfg, sink)[0])
    assert "An answer to Bob" in text and "should look at this" in text
    assert "Nothing about Bob here" not in text


@needs_dovecot
def test_unsubscribe_at_the_feed_address(dovecot, tmp_path, sink):
    cfg = config(dovecot, tmp_path, sink, groups="team")
    # not verified: refused, and the subscriber (known) is told what to do
    dovecot.append("alice", "Replies", reply_mail("feed@example.org", "bob@example.org",
                                                  "unsubscribe", ""))
    run_once(cfg)
    con = db(cfg)
    assert con.execute("SELECT frequency FROM subscribers").fetchone()[0] == "daily"
    con.close()
    told = [m for _, m, _ in sink.messages()]
    assert len(told) == 1 and "Unsubscribe link" in told[0].get_content()
    # verified: done
    dovecot.append("alice", "Replies", reply_mail("feed@example.org", "bob@example.org",
                                                  "unsubscribe", "", verified()))
    run_once(cfg)
    con = db(cfg)
    assert con.execute("SELECT frequency FROM subscribers").fetchone()[0] == "never"
    con.close()
