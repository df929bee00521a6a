"""What the state keeps of a parsed message, and that duplicates are still
told apart by it: a queued message keeps the hash of its content in place
of its text (the text is in its outbox item), a skipped one its full text,
both what cleaning removed; a copy in another folder of the group is not
posted twice, a copy with the same Message-ID and other words is."""
import json

from conftest import run_mailfeed, state_db, write_config

QUOTED = ("Numbers are in.\n\nOn Mon, 23 Nov 2026 at 07:01, Dan <d@example.org> wrote:\n"
          "> old question\n")


def mail(mid, body, extra="", minute=0):
    return ("From: Carol <carol@example.org>\r\nTo: team@example.org\r\nSubject: Budget\r\n"
            "Message-ID: <%s@example.org>\r\nDate: Mon, 23 Nov 2026 08:%02d:00 +0000\r\n"
            "%s\r\n%s" % (mid, minute, extra, body)).encode()


def parsed_forms(cfg):
    con = state_db(cfg)
    try:
        return {(r[0], r[1]): (r[2], json.loads(r[3])) for r in con.execute(
            "SELECT m.mailbox, m.message_id, m.state, p.parsed FROM messages m"
            " JOIN message_parsed p ON p.message = m.id")}
    finally:
        con.close()


def test_parsed_form_and_duplicates(dovecot, tmp_path):
    dovecot.create_folder("alice", "Team")
    dovecot.create_folder("alice", "Other")
    dovecot.append("alice", "Team", mail("q1", QUOTED))
    dovecot.append("alice", "Team", mail("a1", "I am away this week.\n",
                                         "Auto-Submitted: auto-replied\r\n", 1))
    other = {"account": dovecot.user, "folder": "Other", "group": "team", "after": "keep",
             "start": "all"}
    cfg = write_config(tmp_path, dovecot, folder="Team", after="keep",
                       **{"mailbox other": other})
    r = run_mailfeed(cfg.path, "run", "--once")
    assert r.returncode == 0, r.stderr

    forms = parsed_forms(cfg)
    state, queued = forms[("team", "q1@example.org")]
    assert state in ("queued", "delivered")
    assert "text" not in queued and "full_text" not in queued
    assert len(queued["content_sha256"]) == 64
    assert "> old question" in queued["removed"]  # what cleaning took away stays
    state, skipped = forms[("team", "a1@example.org")]
    assert state == "skipped"
    assert "text" not in skipped
    assert "I am away this week." in skipped["full_text"]

    # the same mail in the group's other folder, then a copy with other words
    dovecot.append("alice", "Other", mail("q1", QUOTED, minute=2))
    dovecot.append("alice", "Other", mail("q1", "Numbers are OUT.\n", minute=3))
    r = run_mailfeed(cfg.path, "run", "--once")
    assert r.returncode == 0, r.stderr
    con = state_db(cfg)
    try:
        rows = [(x[0], x[1]) for x in con.execute(
            "SELECT state, reason FROM messages WHERE mailbox = 'other' ORDER BY uid")]
        texts = sorted(x[0] for x in con.execute("SELECT text FROM local_items"))
    finally:
        con.close()
    assert rows[0][0] == "handled"  # not posted twice
    assert rows[1][0] in ("queued", "delivered")
    assert "other content" in rows[1][1]
    assert texts == ["Numbers are OUT.", "Numbers are in."]
