"""[gateway] log_level and log_format take effect on reload (SIGHUP), not only
at start."""
import os
import signal
import sqlite3

from conftest import daemon_log, start_daemon, stop_daemon, wait_for, write_config


def msg(i):
    return ("From: Carol <carol@example.org>\r\nTo: team@example.org\r\n"
            "Subject: Message %d\r\nMessage-ID: <lr%d@example.org>\r\n"
            "Date: Mon, 23 Nov 2026 07:%02d:00 +0000\r\n\r\nBody %d.\r\n" % (i, i, i, i)).encode()


def items(cfg):
    if not os.path.exists(cfg.state):
        return 0
    con = sqlite3.connect(cfg.state)
    try:
        return con.execute("SELECT COUNT(*) FROM local_items").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def set_level(cfg, level):
    text = open(cfg.path).read()
    lines = [l for l in text.splitlines() if not l.startswith("log_level")]
    i = lines.index("[gateway]")
    lines.insert(i + 1, "log_level = " + level)
    with open(cfg.path, "w") as f:
        f.write("\n".join(lines) + "\n")


def test_reload_applies_log_level(dovecot, tmp_path):
    dovecot.create_folder("alice", "Team")
    cfg = write_config(tmp_path, dovecot, folder="Team", gateway={"log_level": "error"})
    p = start_daemon(cfg.path)
    try:
        dovecot.append("alice", "Team", msg(1))
        assert wait_for(lambda: items(cfg) == 1, 30), daemon_log(p)[-3000:]
        # at level error the routine lines stay out of the log
        assert "level=info" not in daemon_log(p) and "level=notice" not in daemon_log(p)
        # the reload takes the new level: its own last line is written
        set_level(cfg, "info")
        p.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "reload.done" in daemon_log(p), 20), daemon_log(p)[-3000:]
        dovecot.append("alice", "Team", msg(2))
        assert wait_for(lambda: items(cfg) == 2, 30), daemon_log(p)[-3000:]
        assert "level=info" in daemon_log(p).split("reload.done", 1)[1]
    finally:
        stop_daemon(p)
