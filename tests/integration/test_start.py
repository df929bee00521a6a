"""First start and backfill: mail already in a folder when its mapping is
first seen is recorded, not posted (start = new); `mailfeed backfill` posts
it on purpose, oldest first.  Real Dovecot, local feed."""
import time

from conftest import run_mailfeed, state_connect, write_config

DAY = 86400


def msg(i, date, subject=None):
    return ("From: Carol <carol@example.org>\r\nTo: team@example.org\r\n"
            "Subject: %s\r\nMessage-ID: <old%d@example.org>\r\nDate: %s\r\n\r\n"
            "Body of message %d.\r\n" % (subject or "Old %d" % i, i,
                                         time.strftime("%a, %d %b %Y %H:%M:%S +0000",
                                                       time.gmtime(date)), i)).encode()


def rows(cfg, sql, *args):
    con = state_connect(cfg.state)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def once(cfg):
    r = run_mailfeed(cfg.path, "run", "--once", timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_start_new_posts_nothing_old_then_backfill_in_date_order(dovecot, tmp_path):
    base = int(time.time()) - 30 * DAY
    # 500 old messages; the older half is imported last, so that UID order
    # and date order differ
    newer = [msg(i, base + 2 * DAY + i * 60) for i in range(250, 500)]
    older = [msg(i, base + i * 60) for i in range(250)]
    dovecot.bulk_import("alice", "Team", newer, internaldate=base + 2 * DAY + 250 * 60)
    time.sleep(1.1)  # Maildir file names of bulk_import are per second
    dovecot.bulk_import("alice", "Team", older, internaldate=base)
    cfg = write_config(tmp_path, dovecot, folder="Team", after="seen",
                       mailbox={"start": "new"})
    r = once(cfg)
    assert "imap.start mailbox=team start=new existing=500 not_taken=500" in r.stderr
    assert rows(cfg, "SELECT COUNT(*) FROM local_items")[0][0] == 0
    assert rows(cfg, "SELECT COUNT(*) FROM messages")[0][0] == 0
    # nothing was marked read either
    flags = [f for (_u, f, _r) in dovecot.messages("alice", "Team")]
    assert not any("\\Seen" in f for f in flags)

    # new mail after the start is posted as usual
    dovecot.append("alice", "Team", msg(900, int(time.time()), subject="Fresh"))
    once(cfg)
    assert [r[0] for r in rows(cfg, "SELECT subject FROM local_items")] == ["Fresh"]

    # a dry run lists and changes nothing
    since = time.strftime("%Y-%m-%d", time.gmtime(base - DAY))
    r = run_mailfeed(cfg.path, "backfill", "team", "--since", since, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "500 messages would be considered" in r.stdout
    assert "Old 0" in r.stdout and "Old 499" in r.stdout
    assert rows(cfg, "SELECT COUNT(*) FROM messages")[0][0] == 1

    r = run_mailfeed(cfg.path, "backfill", "team", "--since", since, "--rate", "600000",
                     timeout=120)
    assert r.returncode == 0, r.stderr
    assert "500 messages to post" in r.stdout, r.stdout
    once(cfg)
    subjects = [s for (s,) in rows(cfg, "SELECT subject FROM local_items ORDER BY id")]
    assert subjects[0] == "Fresh"
    assert subjects[1:] == ["Old %d" % i for i in range(500)]
    # and only then the after-action
    flags = [f for (_u, f, _r) in dovecot.messages("alice", "Team")]
    assert all("\\Seen" in f for f in flags)

    # again: nothing is taken twice
    r = run_mailfeed(cfg.path, "backfill", "team", "--since", since)
    assert r.returncode == 0 and "Nothing to backfill" in r.stdout, r.stdout + r.stderr


def test_start_since_takes_only_recent_mail(dovecot, tmp_path):
    now = int(time.time())
    dovecot.bulk_import("alice", "Team", [msg(i, now - 20 * DAY + i) for i in range(3)],
                        internaldate=now - 20 * DAY)
    time.sleep(1.1)
    dovecot.bulk_import("alice", "Team", [msg(i, now - DAY + i) for i in range(3, 5)],
                        internaldate=now - DAY)
    cfg = write_config(tmp_path, dovecot, folder="Team", mailbox={"start": "since:7d"})
    once(cfg)
    assert sorted(s for (s,) in rows(cfg, "SELECT subject FROM local_items")) == ["Old 3", "Old 4"]


def test_backfill_before_first_read_and_bad_arguments(dovecot, tmp_path):
    cfg = write_config(tmp_path, dovecot, folder="Team", mailbox={"start": "new"})
    dovecot.create_folder("alice", "Team")
    r = run_mailfeed(cfg.path, "backfill", "team", "--since", "2026-01-01")
    assert r.returncode == 1 and "has not been read yet" in r.stderr
    r = run_mailfeed(cfg.path, "backfill", "nosuch", "--since", "2026-01-01")
    assert r.returncode == 2 and "no [mailbox nosuch]" in r.stderr
    r = run_mailfeed(cfg.path, "backfill", "team", "--since", "yesterday")
    assert r.returncode == 2 and "not a date" in r.stderr
