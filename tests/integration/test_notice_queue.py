"""Notices (here: "your message was too large") are queued with the verdict
they explain and sent to the relay apart from ingestion: a relay that
answers 4xx gets the notice again later, exactly once once it accepts; a
relay that takes the connection and never answers holds up no posting;
`status` says how many notices wait; a kill -9 between queueing and
sending sends the notice later, once, and a kill -9 after the relay took
the message does not send it again."""
import json
import signal
import socket
import threading
import time

from conftest import run_mailfeed, start_daemon, state_db, stop_daemon, wait_for, write_config


def big(sender, subject):
    body = ("z" * 76 + "\r\n") * 4000  # ~310 KB
    return ("From: Carol Example <%s>\r\nTo: team@example.org\r\nSubject: %s\r\n"
            "Message-ID: <%s@example.org>\r\nDate: Mon, 23 Nov 2026 07:00:00 +0000\r\n\r\n%s"
            % (sender, subject, subject.replace(" ", "."), body)).encode()


def small(n):
    return ("From: Dan <dan@example.org>\r\nTo: team@example.org\r\nSubject: Small %d\r\n"
            "Message-ID: <small%d@example.org>\r\nDate: Mon, 23 Nov 2026 07:01:00 +0000\r\n"
            "\r\nShort.\r\n" % (n, n)).encode()


def config(tmp_path, dovecot, port, ca_file, **smtp):
    return write_config(
        tmp_path, dovecot, folder="Team", after="seen",
        gateway={"max_message_size": "200K"},
        smtp=dict({"url": "smtp://127.0.0.1:%d" % port,
                   "from": "Feed <feed-bot@example.org>", "ca_file": ca_file}, **smtp),
        **{"subscriber carol@example.org": {"groups": "team", "frequency": "daily"}})


def queue(cfg):
    con = state_db(cfg)
    rows = [dict(r) for r in con.execute("SELECT address, state, attempts FROM notice_queue")]
    con.close()
    return rows


def status_json(cfg):
    return json.loads(run_mailfeed(cfg.path, "status", "--json").stdout)


def posted(cfg):
    con = state_db(cfg)
    n = con.execute("SELECT COUNT(*) FROM local_items").fetchone()[0]
    con.close()
    return n


def test_refused_notice_is_sent_once_when_the_relay_accepts(dovecot, smtp_sink, tmp_path):
    dovecot.create_folder("alice", "Team")
    dovecot.append("alice", "Team", big("carol@example.org", "Annual report"))
    cfg = config(tmp_path, dovecot, smtp_sink.port, dovecot.ca_file)
    smtp_sink.fail("DATA", "451 4.3.0 try again later", times=1)
    r = run_mailfeed(cfg.path, "run", "--once", timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "notice.queued to=carol@example.org reason=too-large" in r.stderr
    assert "notice.not_sent to=carol@example.org reason=too-large result=temporary" in r.stderr
    assert smtp_sink.messages() == []
    assert queue(cfg) == [{"address": "carol@example.org", "state": "pending", "attempts": 1}]
    assert status_json(cfg)["notices_waiting"] == 1
    assert "notices: 1 waiting for the mail relay" in run_mailfeed(cfg.path, "status").stdout

    # not due yet: a run right away does not hammer the relay
    run_mailfeed(cfg.path, "run", "--once", timeout=60)
    assert smtp_sink.messages() == []
    # time passes: the retry is due, the relay accepts now
    con = state_db(cfg)
    con.execute("UPDATE notice_queue SET next_at=0")
    con.commit()
    con.close()
    r = run_mailfeed(cfg.path, "run", "--once", timeout=60)
    assert "notice.sent to=carol@example.org reason=too-large" in r.stderr
    msgs = smtp_sink.messages()
    assert len(msgs) == 1
    assert msgs[0][1]["To"] == "carol@example.org"
    assert msgs[0][1]["Subject"] == "Your message was not posted"
    assert status_json(cfg)["notices_waiting"] == 0
    assert "notices:" not in run_mailfeed(cfg.path, "status").stdout
    run_mailfeed(cfg.path, "run", "--once", timeout=60)
    assert len(smtp_sink.messages()) == 1


def test_permanent_refusal_gives_up_with_a_log_line(dovecot, smtp_sink, tmp_path):
    dovecot.create_folder("alice", "Team")
    dovecot.append("alice", "Team", big("carol@example.org", "Annual report"))
    cfg = config(tmp_path, dovecot, smtp_sink.port, dovecot.ca_file)
    smtp_sink.fail("RCPT", "550 5.1.1 no such user", times=None)
    r = run_mailfeed(cfg.path, "run", "--once", timeout=120)
    assert "notice.failed to=carol@example.org reason=too-large why=\"refused by the relay\"" \
        in r.stderr, r.stderr[-3000:]
    assert queue(cfg)[0]["state"] == "failed"
    assert status_json(cfg)["notices_waiting"] == 0


class SilentRelay:
    """Takes connections and never says a word."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self):
        self.stopped = True
        self.sock.close()
        for c in self.conns:
            c.close()


def test_silent_relay_does_not_stall_ingestion(dovecot, tmp_path):
    relay = SilentRelay()
    dovecot.create_folder("alice", "Team")
    cfg = config(tmp_path, dovecot, relay.port, dovecot.ca_file, timeout="60s")
    p = start_daemon(cfg.path)
    try:
        dovecot.append("alice", "Team", big("carol@example.org", "Annual report"))
        assert wait_for(lambda: len(relay.conns) >= 1, 20)  # the sender is stuck on it
        t0 = time.monotonic()
        dovecot.append("alice", "Team", small(1))
        dovecot.append("alice", "Team", small(2))
        assert wait_for(lambda: posted(cfg) == 2, 10)
        took = time.monotonic() - t0
        assert took < 5, took
        assert queue(cfg)[0]["state"] == "pending"
        assert len(relay.conns) == 1  # still waiting for the greeting
    finally:
        relay.close()  # the relay hangs up: the attempt ends
        assert wait_for(lambda: "notice.not_sent" in open(p.log_path).read(), 10)
        log = stop_daemon(p)
    assert "notice.not_sent to=carol@example.org reason=too-large result=temporary" in log
    assert queue(cfg)[0]["state"] == "pending"


def crash_at(tmp_path, dovecot, smtp_sink, stage):
    """A daemon queues a notice and is killed -9 while the relay holds its
    transfer at stage; then `run --once` runs.  Returns (queue rows before
    the second run, messages the relay got in all)."""
    dovecot.create_folder("alice", "Team")
    cfg = config(tmp_path, dovecot, smtp_sink.port, dovecot.ca_file)
    hold = smtp_sink.pause(stage, after=0)
    p = start_daemon(cfg.path)
    dovecot.append("alice", "Team", big("carol@example.org", "Annual report"))
    assert hold.reached.wait(30)
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    hold.release.set()
    before = queue(cfg)
    time.sleep(0.5)
    r = run_mailfeed(cfg.path, "run", "--once", timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    time.sleep(0.5)
    return before, r.stderr, smtp_sink.messages()


def test_kill9_before_the_data_sends_the_notice_later_once(dovecot, smtp_sink, tmp_path):
    before, log, msgs = crash_at(tmp_path, dovecot, smtp_sink, "RCPT")
    assert [q["state"] for q in before] == ["pending"]
    assert "notice.sent to=carol@example.org reason=too-large" in log
    assert len(msgs) == 1


def test_kill9_after_the_relay_took_it_sends_nothing_again(dovecot, smtp_sink, tmp_path):
    before, log, msgs = crash_at(tmp_path, dovecot, smtp_sink, "DATA")
    assert [q["state"] for q in before] == ["sending"]
    assert "notice.sent" not in log
    assert len(msgs) == 1


def test_daemon_sends_notices_before_and_after_a_reload(dovecot, smtp_sink, tmp_path):
    dovecot.create_folder("alice", "Team")
    cfg = write_config(
        tmp_path, dovecot, folder="Team", after="seen",
        gateway={"max_message_size": "200K"},
        smtp={"url": "smtp://127.0.0.1:%d" % smtp_sink.port,
              "from": "Feed <feed-bot@example.org>", "ca_file": dovecot.ca_file},
        **{"subscriber carol@example.org": {"groups": "team", "frequency": "daily"},
           "subscriber erin@example.org": {"groups": "team", "frequency": "daily"}})
    p = start_daemon(cfg.path)
    try:
        dovecot.append("alice", "Team", big("carol@example.org", "Annual report"))
        smtp_sink.wait_for(1, 20)
        p.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "reload.done" in open(p.log_path).read(), 20)
        dovecot.append("alice", "Team", big("erin@example.org", "Quarterly report"))
        msgs = smtp_sink.wait_for(2, 20)
    finally:
        log = stop_daemon(p)
    assert sorted(m[1]["To"] for m in msgs) == ["carol@example.org", "erin@example.org"]
    assert log.count("notice.sent ") == 2
    assert [q["state"] for q in queue(cfg)] == ["sent", "sent"]
