"""What an operator reads: `status` says whether the daemon runs, lists
mailboxes in a stable order and exits 1 when something fails; a wrong
password is not hammered (three refusals, then an hour, per account, until
a reload); metrics count deliveries, retries, dead letters and digests;
check-config catches quoted values and a missing state directory."""
import json
import os
import re
import signal
import time

from conftest import (Secret, run_mailfeed, start_daemon, state_connect, stop_daemon, wait_for,
                      write_config)


def msg(i):
    return ("From: Carol <carol@example.org>\r\nTo: team@example.org\r\nSubject: S%d\r\n"
            "Message-ID: <s%d@example.org>\r\nDate: Mon, 23 Nov 2026 07:%02d:00 +0000\r\n\r\n"
            "Text %d.\r\n" % (i, i, i, i)).encode()


def status(cfg):
    r = run_mailfeed(cfg.path, "status", "--json")
    return r.returncode, json.loads(r.stdout)


def logins(dovecot):
    return len(re.findall(r"auth failed|Authentication failed|auth-worker|Disconnected "
                          r"\(auth failed", dovecot.log_text()))


def test_wrong_password_backs_off_per_account_until_reload(dovecot, tmp_path):
    dovecot.create_folder("alice", "Two")
    cfg = write_config(tmp_path, dovecot, password="wrong",
                       extra="[mailbox two]\naccount = alice\nfolder = Two\ngroup = two\n"
                             "start = all\n")
    p = start_daemon(cfg.path)
    assert wait_for(lambda: "imap.auth_backoff account=alice failures=3 retry_in=3600s"
                    in open(p.log_path).read(), 30), open(p.log_path).read()[-3000:]
    # three refusals stop the account; the other folder's attempt under way
    # then may end too, and that is all: no folder tries again
    time.sleep(8)
    log = open(p.log_path).read()
    assert 3 <= log.count("imap.error") <= 4, log
    assert log.count("imap.auth_backoff") == 1  # once per account, not per folder
    rc, st = status(cfg)
    assert rc == 1
    assert st["daemon"]["running"] and st["daemon"]["pid"] == p.pid
    assert st["daemon"]["heartbeat"]
    assert st["auth_backoff"].startswith("account alice: login refused, next attempt at ")
    text = run_mailfeed(cfg.path, "status").stdout
    assert "daemon: running, pid %d" % p.pid in text
    assert "fix the credentials and reload to try at once" in text
    # the admin fixes the password; a reload tries at once
    cfg = write_config(tmp_path, dovecot,
                       extra="[mailbox two]\naccount = alice\nfolder = Two\ngroup = two\n"
                             "start = all\n")
    p.send_signal(signal.SIGHUP)
    assert wait_for(lambda: open(p.log_path).read().count("imap.connected") == 2, 20), \
        open(p.log_path).read()[-3000:]
    assert wait_for(lambda: status(cfg)[0] == 0, 20), status(cfg)
    rc, st = status(cfg)
    assert st["auth_backoff"] is None
    stop_daemon(p)
    rc, st = status(cfg)
    assert rc == 0 and not st["daemon"]["running"] and st["daemon"]["pid"] is None
    assert "daemon: not running" in run_mailfeed(cfg.path, "status").stdout


def test_status_order_and_exit_code(dovecot, tmp_path):
    dovecot.create_folder("alice", "Zeta")
    dovecot.append("alice", "Zeta", msg(1))
    cfg = write_config(tmp_path, dovecot, name="zeta", folder="Zeta",
                       extra="[mailbox alpha]\naccount = alice\nfolder = INBOX\ngroup = a\n")
    r = run_mailfeed(cfg.path, "run", "--once")
    assert r.returncode == 0, r.stderr[-2000:]
    rc, st = status(cfg)
    assert rc == 0
    assert [m["name"] for m in st["mailboxes"]] == ["alpha", "zeta"]
    # an item that went dead makes status fail, as `postfix status` does
    con = state_connect(cfg.state)
    con.execute("UPDATE outbox SET state='dead', error='refused'")
    con.commit()
    con.close()
    rc, st = status(cfg)
    assert rc == 1 and st["outbox"]["dead"] == 1


def test_metrics_counters_and_build_info(dovecot, tmp_path):
    for i in range(3):
        dovecot.append("alice", "INBOX", msg(i))
    mfile = tmp_path / "mailfeed.prom"
    cfg = write_config(tmp_path, dovecot, gateway={"metrics_file": str(mfile)})
    p = start_daemon(cfg.path)
    assert wait_for(lambda: mfile.exists() and
                    "mailfeed_delivered_total 3" in mfile.read_text(), 30), \
        mfile.read_text() if mfile.exists() else open(p.log_path).read()[-2000:]
    stop_daemon(p)
    text = mfile.read_text()
    for line in ("# TYPE mailfeed_delivered_total counter", "mailfeed_retried_total 0",
                 "mailfeed_dead_total 0", "mailfeed_digests_sent_total 0"):
        assert line in text, text
    assert re.search(r'^mailfeed_build_info\{version="[0-9.]+",sqlite="[0-9.]+"\} 1$', text,
                     re.M), text


def test_check_config_quoted_value_and_missing_state_dir(dovecot, tmp_path):
    cfg = write_config(tmp_path, dovecot, folder='"Fundraising"')
    r = run_mailfeed(cfg.path, "check-config")
    assert r.returncode == 2
    assert 'folder = "Fundraising": values are written without quotes (folder = Fundraising)' \
        in r.stderr, r.stderr
    cfg = write_config(tmp_path, dovecot, gateway={"state": str(tmp_path / "nodir" / "s.db")})
    r = run_mailfeed(cfg.path, "check-config")
    assert r.returncode == 2
    assert "the directory %s does not exist" % (tmp_path / "nodir") in r.stderr, r.stderr
