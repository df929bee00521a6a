"""The Dovecot harness itself: what it writes straight into a Maildir must
arrive as written, or a test would blame the daemon for mail the harness
lost."""
import re
import time


def raw(n):
    return ("From: a@example.org\r\nTo: b@example.org\r\nSubject: bulk %d\r\n"
            "Message-ID: <bulk.%d@example.org>\r\n\r\nBody %d.\r\n" % (n, n, n)).encode()


def test_bulk_imports_in_one_second_keep_every_message(dovecot, monkeypatch):
    # Two imports into one folder within the same second (the clock stands
    # still here): the second must neither replace the first one's files nor
    # be taken for them.
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now)
    dovecot.bulk_import("alice", "Waves", [raw(i) for i in range(5)])
    dovecot.bulk_import("alice", "Waves", [raw(i) for i in range(5, 10)])
    monkeypatch.undo()
    got = dovecot.messages("alice", "Waves")
    assert [u for (u, _f, _r) in got] == list(range(1, 11))
    subjects = [re.search(rb"Subject: (bulk \d+)", r).group(1).decode() for (_u, _f, r) in got]
    assert subjects == ["bulk %d" % i for i in range(10)]
