"""`preview` says what the daemon does: for a set of messages (a post, a
reply, a reply whose headers were lost, an auto-reply, a bounce, a
newsletter, a sender outside allow_senders, mail from the gateway's own
address, a message with a Message-ID that is not an id), the classification,
reason, text and hashtags that preview shows are those the daemon then
records and posts."""
import json

from conftest import run_mailfeed, state_db, write_config


def mail(i, subject, body, extra="", frm="Carol <carol@example.org>", msgid=None):
    msgid = msgid if msgid is not None else "<d%d@example.org>" % i
    return ("From: %s\r\nTo: team@example.org\r\nSubject: %s\r\n"
            "Message-ID: %s\r\nDate: Mon, 23 Nov 2026 08:%02d:00 +0000\r\n"
            "%s\r\n%s" % (frm, subject, msgid, i, extra, body)).encode()


def test_preview_and_daemon_agree(dovecot, tmp_path):
    dovecot.create_folder("alice", "Team")
    cfg = write_config(tmp_path, dovecot, folder="Team", after="seen",
                       mailbox={"allow_senders": "example.org",
                                "hashtags": "fundraising"})
    # the mapping is seen once empty; what arrives afterwards is new mail
    r = run_mailfeed(cfg, "run", "--once", timeout=120)
    assert r.returncode == 0, r.stderr
    dovecot.append("alice", "Team", mail(1, "[Q3] Appeal", "Draft attached #campaign\n"))
    r = run_mailfeed(cfg, "run", "--once", timeout=120)
    assert r.returncode == 0, r.stderr

    batch = [
        mail(2, "Re: [Q3] Appeal",
             "Looks good. #approved\n\nOn Mon, 23 Nov 2026 at 08:01, Carol "
             "<carol@example.org> wrote:\n> Draft attached\n",
             "In-Reply-To: <d1@example.org>\r\n"),
        # a reply whose client lost In-Reply-To and References
        mail(3, "RE: [Q3] Appeal", "Agreed, send it.\n\nBest regards,\nDan\n",
             frm="Dan <dan@example.org>"),
        mail(4, "Out of Office: Appeal", "I am away.\n",
             "Auto-Submitted: auto-replied\r\n"),
        mail(5, "Undelivered Mail Returned to Sender", "The mail could not be delivered.\n",
             frm="MAILER-DAEMON <mailer-daemon@example.org>"),
        mail(6, "Our November deals", "Buy now!\n", "Precedence: bulk\r\n",
             frm="Shop <news@example.org>"),
        mail(7, "Hello", "From outside\n", frm="Eve <eve@elsewhere.net>"),
        mail(8, "Digest", "Posted by the gateway itself\n", frm="Feed <feed@example.org>"),
        # a git send-email answer to its In-Reply-To prompt: not an id
        mail(9, "[PATCH] net: fix a leak", "Patch text #kernel\n",
             "In-Reply-To: <yes>\r\nReferences: <yes>\r\n", msgid="<yes>"),
        mail(10, "New topic", "Fresh idea #ideas\n\nSent from my iPhone\n"),
    ]
    for raw in batch:
        dovecot.append("alice", "Team", raw)

    r = run_mailfeed(cfg, "preview", "team", "--limit", "20", "--json")
    assert r.returncode == 0, r.stderr
    preview = {i["uid"]: i for i in json.loads(r.stdout)}
    assert sorted(preview) == list(range(1, 11))
    # what preview says, by hand, for the cases that matter
    assert preview[2]["classification"] == "comment", preview[2]
    assert preview[2]["text"] == "Looks good. #approved"
    assert preview[2]["hashtags"][:1] == ["fundraising"]
    assert {"Q3", "approved"} <= set(preview[2]["hashtags"])
    assert preview[3]["classification"] == "comment"
    assert preview[3]["text"] == "Agreed, send it.\n\nBest regards,\nDan"
    assert preview[4]["classification"] == "skipped" and "auto" in preview[4]["reason"]
    assert preview[5]["classification"] == "skipped" and "bounce" in preview[5]["reason"]
    assert preview[6]["classification"] == "skipped" and "bulk" in preview[6]["reason"]
    assert preview[7]["classification"] == "skipped" and "allow" in preview[7]["reason"]
    assert preview[8]["classification"] == "skipped" and "loop" in preview[8]["reason"]
    assert preview[9]["classification"] == "post"
    assert preview[10]["classification"] == "post"
    assert preview[10]["text"] == "Fresh idea #ideas"

    r = run_mailfeed(cfg, "run", "--once", timeout=120)
    assert r.returncode == 0, r.stderr
    con = state_db(cfg)
    try:
        rows = con.execute(
            "SELECT m.uid, m.state, m.reason, o.kind, t.payload FROM messages m"
            " LEFT JOIN outbox o ON o.message = m.id"
            " LEFT JOIN outbox_payloads t ON t.item = o.id WHERE m.uid >= 2").fetchall()
    finally:
        con.close()
    assert sorted(r[0] for r in rows) == list(range(2, 11))
    for uid, state, reason, kind, payload in rows:
        p = preview[uid]
        if p["classification"] == "skipped":
            assert state == "skipped" and kind is None, (uid, state, kind)
            assert reason == p["reason"], uid
        else:
            assert state in ("queued", "delivered", "handled") and kind == p["classification"], \
                (uid, state, kind, p["classification"])
            body = json.loads(payload)
            assert body["text"] == p["text"], uid
            assert body["hashtags"] == p["hashtags"], uid

    # inspect asks the same decision: the reply, saved as a file, is a
    # comment of the mapping (with its hashtags) until the daemon has it,
    # then a duplicate; a new reply to it is a comment
    reply = tmp_path / "reply.eml"
    reply.write_bytes(mail(11, "Re: [Q3] Appeal", "One more thing. #budget\n",
                           "In-Reply-To: <d2@example.org>\r\n"))
    r = run_mailfeed(cfg, "inspect", str(reply), "--json")
    assert r.returncode == 0, r.stderr
    o = json.loads(r.stdout)
    assert o["classification"] == "comment" and o["mailbox"] == "team"
    assert o["hashtags"][0] == "fundraising" and "budget" in o["hashtags"]
    r = run_mailfeed(cfg, "inspect", str(reply), "--mailbox", "team")
    assert "Classification: comment (mailbox team)" in r.stdout
    assert "#fundraising" in r.stdout
    old = tmp_path / "old.eml"
    old.write_bytes(batch[0])
    o = json.loads(run_mailfeed(cfg, "inspect", str(old), "--json").stdout)
    assert o["classification"] == "skipped" and o["reason"].startswith("duplicate")
    r = run_mailfeed(cfg, "inspect", str(old), "--mailbox", "nosuch")
    assert r.returncode == 2 and "nosuch" in r.stderr


def test_inspect_on_a_state_not_yet_upgraded(dovecot, tmp_path):
    dovecot.append("alice", "INBOX", mail(1, "Hello", "First text.\n"))
    # an SQLite state whatever the run's engine: its history of versions is
    # SQLite's (a PostgreSQL state starts at a later version)
    state = str(tmp_path / "state.db")
    cfg = write_config(tmp_path, dovecot, gateway={"state": state})
    cfg.state = state
    r = run_mailfeed(cfg, "run", "--once", timeout=120)
    assert r.returncode == 0, r.stderr
    # the state as the previous version left it (schema 8: raw and parsed
    # mail in messages), say while the old daemon still runs
    con = state_db(cfg)
    con.executescript(
        "ALTER TABLE messages ADD COLUMN raw BLOB; ALTER TABLE messages ADD COLUMN parsed TEXT;"
        "UPDATE messages SET raw=(SELECT raw FROM message_bodies WHERE message=messages.id),"
        " parsed=(SELECT parsed FROM message_parsed WHERE message=messages.id);"
        "DROP TABLE message_parsed; DROP TABLE message_bodies;"
        "ALTER TABLE outbox ADD COLUMN payload TEXT;"
        "UPDATE outbox SET payload=(SELECT payload FROM outbox_payloads WHERE item=outbox.id);"
        "DROP TABLE outbox_payloads; DROP INDEX outbox_waiting;"
        "CREATE INDEX outbox_due ON outbox(state, next_at, kind, ext_parent, parent, sort_date);"
        + "".join("ALTER TABLE %s DROP COLUMN %s;" % (t, c)
                  for t in ("outbox", "digest_runs", "notice_queue")
                  for c in ("claimed_by", "claim_until"))
        + "PRAGMA user_version=8;")
    con.close()
    # a changed copy under the same Message-ID is not a duplicate
    changed = tmp_path / "changed.eml"
    changed.write_bytes(mail(1, "Hello", "Other text.\n"))
    r = run_mailfeed(cfg, "inspect", str(changed))
    assert r.returncode == 0, r.stderr
    assert "duplicate" not in r.stdout, r.stdout
    assert "not yet upgraded" in r.stderr and "mailfeed status" in r.stderr, r.stderr
    con = state_db(cfg)
    assert con.execute("PRAGMA user_version").fetchone()[0] == 8  # only looked at
    con.close()
    # once upgraded, the state is used again
    assert run_mailfeed(cfg, "status").returncode == 0
    r = run_mailfeed(cfg, "inspect", str(changed))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "Classification: comment" in r.stdout and "duplicate" not in r.stdout, r.stdout
