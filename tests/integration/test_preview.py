"""`mailfeed preview`: a dry run of a mapping shows what its newest
messages would become, and changes nothing on the server or in the state."""
import json
import os

from conftest import run_mailfeed, state_db, write_config


def mail(i, subject, body, extra="", frm="carol@example.org"):
    return ("From: Carol <%s>\r\nTo: team@example.org\r\nSubject: %s\r\n"
            "Message-ID: <p%d@example.org>\r\nDate: Mon, 23 Nov 2026 07:%02d:00 +0000\r\n"
            "%s\r\n%s" % (frm, subject, i, i, extra, body)).encode()


def test_preview_shows_and_changes_nothing(dovecot, tmp_path):
    dovecot.create_folder("alice", "Team")
    dovecot.append("alice", "Team", mail(1, "[Q3] Appeal", "Draft attached #campaign\n"))
    dovecot.append("alice", "Team", mail(2, "Re: [Q3] Appeal",
                                         "Looks good.\n\nOn Mon, 23 Nov 2026 at 07:01, Carol "
                                         "<carol@example.org> wrote:\n> Draft attached\n",
                                         "In-Reply-To: <p1@example.org>\r\n"))
    dovecot.append("alice", "Team", mail(3, "Out of Office: Appeal", "I am away.\n",
                                         "Auto-Submitted: auto-replied\r\n"))
    dovecot.append("alice", "Team", mail(4, "Hello", "From outside\n",
                                         frm="eve@elsewhere.net"))
    cfg = write_config(tmp_path, dovecot, folder="Team", after="seen",
                       mailbox={"allow_senders": "example.org"})
    r = run_mailfeed(cfg, "preview", "team", "--limit", "10", "--json")
    assert r.returncode == 0, r.stderr
    items = json.loads(r.stdout)
    assert [i["uid"] for i in items] == [1, 2, 3, 4]
    assert items[0]["classification"] == "post"
    assert items[0]["subject"] == "[Q3] Appeal"
    assert {"Q3", "campaign"} <= {t for t in items[0]["hashtags"]}
    assert items[1]["text"] == "Looks good."
    assert "Draft attached" in items[1]["removed"]
    assert items[2]["classification"] == "skipped" and "auto" in items[2]["reason"]
    assert items[3]["classification"] == "skipped" and "allow" in items[3]["reason"]
    # --limit takes the newest
    r = run_mailfeed(cfg, "preview", "team", "--limit", "1", "--json")
    assert [i["uid"] for i in json.loads(r.stdout)] == [4]
    # human form
    r = run_mailfeed(cfg, "preview", "team")
    assert r.returncode == 0 and "UID 1: post" in r.stdout and "#campaign" in r.stdout
    # nothing changed: messages still unseen, no state written
    assert all("\\Seen" not in flags for _uid, flags, _raw in dovecot.messages("alice", "Team"))
    if os.path.exists(cfg.state):
        con = state_db(cfg)
        try:
            assert con.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0
        except Exception as e:  # no schema at all is fine too
            assert "no such table" in str(e)
        finally:
            con.close()


def test_preview_unknown_mailbox_is_a_usage_error(dovecot, tmp_path):
    cfg = write_config(tmp_path, dovecot)
    r = run_mailfeed(cfg, "preview", "nosuch")
    assert r.returncode == 2 and "nosuch" in r.stderr
