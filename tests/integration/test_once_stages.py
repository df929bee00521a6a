"""`mailfeed run --once` runs its stages side by side: delivery sends the
first posts while later messages are still being processed; every message
still becomes exactly one item, every comment reaches the feed after its
post, the after-actions run once everything was delivered, and the pass's
`run.once done` line says how long each stage was at work and when it
ended.

Real Dovecot on 127.0.0.1 (conftest's `dovecot` fixture); the binary under
test is $MAILFEED_BIN; the state is SQLite or PostgreSQL
(MAILFEED_TEST_ENGINE)."""
import re

from conftest import run_mailfeed, state_db, write_config

THREADS = 220  # a post and a reply each: 440 messages, 9 processing batches


def msg(i, reply):
    mid = "<stage%d%s@example.org>" % (i, ".re" if reply else "")
    head = ("From: %s <%s@example.org>\r\nTo: team@example.org\r\n"
            "Subject: %sStage item %d\r\nMessage-ID: %s\r\n"
            "Date: Mon, 23 Nov 2026 %02d:%02d:%02d +0000\r\n"
            % ("Dan" if reply else "Carol", "dan" if reply else "carol",
               "Re: " if reply else "", i, mid, 6 + i // 60, i % 60, 30 if reply else 0))
    if reply:
        head += "In-Reply-To: <stage%d@example.org>\r\nReferences: <stage%d@example.org>\r\n" % (
            i, i)
    return (head + "\r\n%s of item %d.\r\n" % ("Reply" if reply else "Body", i)).encode()


def test_stages_side_by_side(dovecot, tmp_path):
    dovecot.create_folder("alice", "Stages")
    mails = []
    for i in range(THREADS):
        mails += [msg(i, False), msg(i, True)]
    dovecot.bulk_import("alice", "Stages", mails)
    cfg = write_config(tmp_path, dovecot, folder="Stages", after="seen")
    p = run_mailfeed(cfg.path, "run", "--once", timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]

    done = re.search(r"run\.once done .*", p.stderr)
    assert done, p.stderr[-3000:]
    f = {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", done.group(0))}
    assert f["failures"] == 0 and f["dead"] == 0 and f["pending"] == 0
    assert f["delivered"] == 2 * THREADS
    for k in ("fetch_s", "process_s", "deliver_s", "parse_s", "enqueue_s", "deliver_cpu_s"):
        assert 0 <= f[k] <= f["total_s"]
    # processing ends after the take-in, delivery after processing
    assert f["fetch_s"] <= f["process_end_s"] <= f["deliver_end_s"] <= f["total_s"]

    lines = p.stderr.splitlines()
    queued = [i for i, line in enumerate(lines) if "message.queued" in line]
    delivered = [i for i, line in enumerate(lines) if "outbox.delivered" in line]
    assert len(queued) == 2 * THREADS and len(delivered) == 2 * THREADS
    # the first posts went out before the last message was processed
    assert delivered[0] < queued[-1]
    # the after-actions come after everything was delivered
    acked = [i for i, line in enumerate(lines) if "imap.after " in line]
    assert acked and acked[0] > delivered[-1]

    db = state_db(cfg)
    try:
        rows = db.execute("SELECT id, key, parent, subject FROM local_items").fetchall()
        by_id = {r[0]: r for r in rows}
        assert len(rows) == 2 * THREADS
        assert len({r[1] for r in rows}) == 2 * THREADS
        comments = [r for r in rows if r[2] is not None]
        assert len(comments) == THREADS
        for c in comments:
            parent = by_id[c[2]]
            assert parent[0] < c[0]  # written after its post
            assert c[3] == "Re: " + parent[3]
    finally:
        db.close()
