"""Mail over max_message_size: never fetched whole, recorded as skipped with
its sender and subject (from its header block) so that `dead list` shows
who sent what, and the sender is told why it was not posted, as the
example config promises.  Only what is recorded is marked read."""
import json

from conftest import run_mailfeed, write_config


def big(sender, subject, extra=""):
    body = ("z" * 76 + "\r\n") * 4000  # ~310 KB
    return ("From: Carol Example <%s>\r\nTo: team@example.org\r\nSubject: %s\r\n"
            "Message-ID: <%s@example.org>\r\nDate: Mon, 23 Nov 2026 07:00:00 +0000\r\n%s\r\n%s"
            % (sender, subject, subject.replace(" ", "."), extra, body)).encode()


def small():
    return (b"From: Dan <dan@example.org>\r\nTo: team@example.org\r\nSubject: Small\r\n"
            b"Message-ID: <small@example.org>\r\nDate: Mon, 23 Nov 2026 07:01:00 +0000\r\n"
            b"\r\nShort.\r\n")


def test_message_over_the_size_limit(dovecot, smtp_sink, tmp_path):
    dovecot.create_folder("alice", "Team")
    dovecot.append("alice", "Team", big("carol@example.org", "Annual report"))
    dovecot.append("alice", "Team", big("carol@example.org", "Robot report",
                                        extra="Auto-Submitted: auto-generated\r\n"))
    dovecot.append("alice", "Team", big("mallory@example.org", "Unknown sender"))
    dovecot.append("alice", "Team", small())
    cfg = write_config(
        tmp_path, dovecot, folder="Team", after="seen",
        gateway={"max_message_size": "200K"},
        smtp={"url": "smtp://127.0.0.1:%d" % smtp_sink.port,
              "from": "Feed <feed-bot@example.org>", "ca_file": dovecot.ca_file},
        **{"subscriber carol@example.org": {"groups": "team", "frequency": "daily"}})
    r_once = r = run_mailfeed(cfg.path, "run", "--once", timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]

    # the dead list names sender and subject of each, with the reason
    r = run_mailfeed(cfg.path, "dead", "--json")
    dead = {d["uid"]: d for d in json.loads(r.stdout)["dead"]}
    assert sorted(dead) == [1, 2, 3], dead
    assert dead[1]["from"] == "carol@example.org" and dead[1]["subject"] == "Annual report"
    assert dead[3]["from"] == "mallory@example.org"
    assert all(d["state"] == "skipped" and "too large" in d["reason"] for d in dead.values())
    text = run_mailfeed(cfg.path, "dead", "list").stdout
    assert "from: carol@example.org  subject: Annual report" in text, text

    # the known human sender is told once; not the robot, not the unverified
    assert "notice.suppressed to=mallory@example.org reason=too-large" in r_once.stderr
    assert smtp_sink.wait_for(1, 10)
    msgs = smtp_sink.messages()
    assert len(msgs) == 1, [m[1]["To"] for m in msgs]
    env, m, _raw = msgs[0]
    assert m["To"] == "carol@example.org" and m["Subject"] == "Your message was not posted"
    body = m.get_body(("plain",)).get_content()
    assert '"Annual report"' in body and "to Team was not posted" in body
    assert "0.2 MB" in body and "as a link" in body

    # recorded, so marked read; the small one was posted
    flags = [f for (_u, f, _r) in dovecot.messages("alice", "Team")]
    assert all("\\Seen" in f for f in flags), flags
    r = run_mailfeed(cfg.path, "run", "--once", timeout=60)
    assert len(smtp_sink.messages()) == 1  # not told twice
