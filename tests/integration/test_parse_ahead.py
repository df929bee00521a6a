"""Through a backlog the next batch is parsed while the one before is
recorded.  What a person sees must not change: every message is posted
once, a reply parsed ahead of its parent's batch is still a comment on it,
a message that holds the parser in a batch parsed ahead goes to the dead
list with its reason while the rest of its batch is posted, and a kill -9
while a batch is parsed ahead loses and doubles nothing.  (Batches are 50
messages; 130 make three.)"""
import time
from pathlib import Path

from conftest import run_mailfeed, start_daemon, stop_daemon, wait_for, write_config
from test_parse_stall import (attempts, children, kill_hard, payload, payload_env,  # noqa: F401
                              query)

COUNT = 130
SPIN = 75          # in the second batch, parsed ahead of the first's record
REPLIES = {80: 10,  # second batch, answering the first
           120: 60}  # third batch, answering the second


def mail(i):
    refs = ""
    if i in REPLIES:
        refs = ("In-Reply-To: <a%d@example.org>\r\nReferences: <a%d@example.org>\r\n"
                % (REPLIES[i], REPLIES[i]))
    subject = "Re: Topic %d" % REPLIES[i] if i in REPLIES else "Topic %d" % i
    body = "PAYLOAD:spin" if i == SPIN else "Words of message %d." % i
    return ("From: Carol <carol@example.org>\r\nTo: team@example.org\r\nSubject: %s\r\n"
            "Message-ID: <a%d@example.org>\r\nDate: Mon, 23 Nov 2026 %02d:%02d:00 +0000\r\n"
            "%s\r\n%s\r\n" % (subject, i, 8 + i // 60, i % 60, refs, body)).encode()


def backlog(dovecot, tmp_path, parse_timeout):
    """The COUNT messages in a folder, and the config that maps it."""
    dovecot.create_folder("alice", "Team")
    dovecot.bulk_import("alice", "Team", [mail(i) for i in range(COUNT)])
    return write_config(tmp_path, dovecot, folder="Team", after="seen",
                        gateway={"parse_timeout": parse_timeout})


def posted(cfg):
    """(subject, subject of the post it comments on, or None) in posting order."""
    return query(cfg, "SELECT i.subject, p.subject FROM local_items i"
                      " LEFT JOIN local_items p ON p.id = i.parent ORDER BY i.id")


def test_a_backlog_parsed_ahead_posts_each_message_once_in_thread_order(dovecot, tmp_path,
                                                                        payload):
    cfg = backlog(dovecot, tmp_path, "2s")
    r = run_mailfeed(cfg.path, "run", "--once", env=payload_env(payload), timeout=120)
    assert "run.once done" in r.stderr, r.stderr[-3000:]

    items = posted(cfg)
    subjects = [s for s, _ in items]
    assert len(subjects) == COUNT - 1, r.stderr[-3000:]
    assert len(set(subjects)) == COUNT - 1  # none twice
    assert "Topic %d" % SPIN not in subjects
    for child, parent in REPLIES.items():
        assert ("Re: Topic %d" % parent, "Topic %d" % parent) in items, items

    state, reason = query(cfg, "SELECT state, reason FROM messages WHERE message_id=?",
                          "a%d@example.org" % SPIN)[0]
    assert state == "dead"
    assert reason == "parser timed out after 2 s"
    assert query(cfg, "SELECT count(*) FROM messages WHERE state='new'")[0][0] == 0


def test_a_kill_while_a_batch_is_parsed_ahead_loses_and_doubles_nothing(dovecot, tmp_path,
                                                                         payload):
    cfg = backlog(dovecot, tmp_path, "120s")
    p = start_daemon(cfg.path, env=payload_env(payload))

    def first_recorded_second_parsing():
        # the first batch is queued while the second, ahead, holds the parser
        queued = query(cfg, "SELECT COUNT(*) FROM messages WHERE state='queued'")
        return (queued and queued[0][0] == 50 and
                attempts(cfg, "a%d@example.org" % SPIN) == (1, "new") and
                any(children(p.pid)))

    assert wait_for(first_recorded_second_parsing, 60), Path(p.log_path).read_text()[-3000:]
    time.sleep(0.3)
    kill_hard(p)
    # restarted without the payload: every message is posted, each once
    p = start_daemon(cfg.path)
    try:
        assert wait_for(lambda: query(cfg, "SELECT COUNT(*) FROM local_items")[0][0] >= COUNT,
                        90), Path(p.log_path).read_text()[-3000:]
        time.sleep(1)
    finally:
        stop_daemon(p)
    items = posted(cfg)
    subjects = [s for s, _ in items]
    assert len(subjects) == COUNT and len(set(subjects)) == COUNT, len(subjects)
    for child, parent in REPLIES.items():
        assert ("Re: Topic %d" % parent, "Topic %d" % parent) in items, items
