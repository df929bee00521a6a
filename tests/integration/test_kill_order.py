"""A kill while a batch is parsed does not change which message of a thread
becomes the post.  The messages whose parse was under way are tried one by
one after the restart (to find one that stops the daemon); those that parse
go back among the new mail and are handled together in Date order, so a
reply stored before its parent in the same batch is still a comment on it."""
import time
from pathlib import Path

from conftest import start_daemon, stop_daemon, wait_for, write_config
from test_parse_stall import attempts, children, kill_hard, payload, payload_env, query  # noqa: F401


def mail(i, subject, minute, body, parent=None):
    refs = "In-Reply-To: <k%d@example.org>\r\nReferences: <k%d@example.org>\r\n" % \
        (parent, parent) if parent else ""
    return ("From: Carol <carol@example.org>\r\nTo: team@example.org\r\nSubject: %s\r\n"
            "Message-ID: <k%d@example.org>\r\nDate: Mon, 23 Nov 2026 09:%02d:00 +0000\r\n"
            "%s\r\n%s\r\n" % (subject, i, minute, refs, body)).encode()


def items(cfg):
    """(subject, subject of the post it comments on, or None) in posting order."""
    return query(cfg, "SELECT i.subject, p.subject FROM local_items i"
                      " LEFT JOIN local_items p ON p.id = i.parent ORDER BY i.id")


def test_reply_stored_before_its_parent_stays_a_comment_after_a_kill(dovecot, tmp_path,
                                                                       payload):
    dovecot.create_folder("alice", "Team")
    # the reply is stored (and dated by the server) before the message it
    # answers, in one batch; a third message holds the parser meanwhile
    dovecot.bulk_import("alice", "Team", [
        mail(2, "Re: Plan", 5, "Agreed.", parent=1),
        mail(1, "Plan", 0, "The plan."),
        mail(3, "Slow", 10, "PAYLOAD:spin")])
    cfg = write_config(tmp_path, dovecot, folder="Team", after="seen",
                       gateway={"parse_timeout": "120s"})
    p = start_daemon(cfg.path, env=payload_env(payload))

    def parsing_slow():
        return attempts(cfg, "k3@example.org") == (1, "new") and any(children(p.pid))

    assert wait_for(parsing_slow, 60), Path(p.log_path).read_text()[-3000:]
    time.sleep(0.3)
    kill_hard(p)
    assert items(cfg) == []
    assert attempts(cfg, "k1@example.org") == (1, "new")
    assert attempts(cfg, "k2@example.org") == (1, "new")
    # restarted without the payload: every message of the batch parses now
    p = start_daemon(cfg.path)
    try:
        assert wait_for(lambda: len(items(cfg)) == 3, 60), Path(p.log_path).read_text()[-3000:]
    finally:
        stop_daemon(p)
    got = items(cfg)
    assert ("Plan", None) in got, got
    assert ("Re: Plan", "Plan") in got, got
    assert ("Slow", None) in got, got
