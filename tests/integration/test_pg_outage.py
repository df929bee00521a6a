"""PostgreSQL stopped for 20 s in the middle of a run: mail keeps arriving
in the watched folder and posts and notifications are being delivered
when the server goes away; it comes back 20 s later.  The daemon stays up
all along, and in the end every message is posted exactly once and every
notification went out exactly once."""
import json
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import pytest

from conftest import (daemon_log, run_mailfeed, start_daemon, stop_daemon, wait_for,
                      write_config)

BACKLOG = 60  # in the folder before the start
ARRIVING = 100  # appended one by one while the run goes on
GAP = 0.25  # seconds between two of them
OUTAGE = 20  # seconds without PostgreSQL
READER = "ann@example.org"


@pytest.fixture(autouse=True)
def _daemon_knows_instances(tmp_path):
    """Skips on a build whose daemon does not yet share its work (no lease
    key in [gateway])."""
    cfg = write_config(tmp_path / "probe", gateway={"lease_timeout": "30s"})
    r = run_mailfeed(cfg, "check-config")
    if "unknown key 'lease_timeout'" in r.stderr:
        pytest.skip("this build's daemon does not share work between instances yet")


def mail(i, date):
    m = EmailMessage()
    m["From"] = "Writer %d <writer%d@example.org>" % (i % 7, i % 7)
    m["To"] = "team@example.org"
    m["Subject"] = "Outage item %d" % i
    m["Date"] = format_datetime(date)
    m["Message-ID"] = "<outage.%d@example.org>" % i
    m.set_content("Item %d: who brings what to the spring event.\n" % i)
    return m.as_bytes()


def rows(postgres, query):
    """The rows of query, none while the daemon has not made its tables."""
    try:
        return postgres.sql(query)
    except RuntimeError as e:
        if "does not exist" in str(e):
            return []
        raise


def posted(postgres):
    r = rows(postgres, "SELECT COUNT(*) FROM local_items")
    return int(r[0][0]) if r else 0


def sink_count(sink):
    return len(list(Path(sink.dir).glob("*.json")))


def test_postgresql_away_for_20s_loses_and_doubles_nothing(dovecot, postgres, smtp_sink, tls_ca,
                                                           tmp_path):
    start = datetime.now(timezone.utc) - timedelta(hours=1)
    dovecot.bulk_import("alice", "Team", [mail(i, start + timedelta(seconds=i))
                                          for i in range(BACKLOG)])
    cfg = write_config(tmp_path, dovecot, folder="Team", after="keep",
                       gateway={"state": postgres.dsn},
                       smtp={"url": "smtp://127.0.0.1:%d" % smtp_sink.port,
                             "from": "Feed <feed-bot@example.org>", "ca_file": tls_ca.ca_file})
    # a notification of each post, subscribed before any was delivered
    r = run_mailfeed(cfg, "subscribe", READER, "--groups", "team", "--each")
    assert r.returncode == 0, r.stderr
    postgres.sql("UPDATE subscribers SET since = 0")
    p = start_daemon(cfg)
    assert wait_for(lambda: posted(postgres) >= 5, 60), daemon_log(p)[-3000:]

    total = BACKLOG + ARRIVING
    appended = []

    def arrive():
        for i in range(BACKLOG, total):
            dovecot.append("alice", "Team", mail(i, start + timedelta(seconds=i)))
            appended.append(i)
            time.sleep(GAP)

    t = threading.Thread(target=arrive)
    t.start()
    try:
        time.sleep(2)
        server = postgres.server
        before = posted(postgres), sink_count(smtp_sink)
        server.stop()
        away = time.monotonic()
        while time.monotonic() - away < OUTAGE:
            assert p.poll() is None, "daemon exited while PostgreSQL was away:\n" + \
                daemon_log(p)[-3000:]
            time.sleep(0.5)
        server.start()
    finally:
        t.join()
    assert p.poll() is None, daemon_log(p)[-3000:]

    assert wait_for(lambda: posted(postgres) >= total, 120, step=0.25), \
        "%d of %d posted after the outage:\n%s" % (posted(postgres), total,
                                                    daemon_log(p)[-3000:])
    assert wait_for(lambda: sink_count(smtp_sink) >= total, 120, step=0.25), \
        "%d of %d notifications" % (sink_count(smtp_sink), total)
    time.sleep(3)  # anything sent twice would come now
    log = stop_daemon(p, timeout=30)

    items = postgres.sql("SELECT t.payload FROM local_items l JOIN outbox o ON o.key = l.key"
                         " JOIN outbox_payloads t ON t.item = o.id")
    ids = Counter(json.loads(r[0])["message_id"] for r in items)
    want = {"outage.%d@example.org" % i for i in range(total)}
    assert set(ids) == want, sorted(want ^ set(ids))[:20]
    assert set(ids.values()) == {1}, ids.most_common(3)
    assert postgres.sql("SELECT COUNT(*) FROM outbox WHERE state <> 'delivered'") == [["0"]]

    mails = smtp_sink.messages()
    assert all(env["rcpt_tos"] == [READER] for env, _m, _r in mails)
    subjects = Counter(str(m["Subject"]) for _env, m, _r in mails)
    assert len(mails) == total and len(subjects) == total, subjects.most_common(3)
    # the outage happened while work was under way; the daemon said once
    # that it waits, and when it went on
    assert before[0] < total
    assert log.count("store.unavailable") == 1 and "store.resumed waited_s=" in log, log[-3000:]
