"""The Mattermost backend against the Mattermost test double on loopback,
driven through build/asan/tests/feedprobe; the double's /__state shows what
reached the server."""
import json
import os
import subprocess
import time
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PROBE = os.environ.get("FEEDPROBE_BIN", os.path.join(ROOT, "build/asan/tests/feedprobe"))
DOUBLE = os.path.join(HERE, "doubles", "mattermost_double.py")
CHANNEL = "4xp9fdt77pncbef59f4k1qe83o"
TOKEN = "xq7k3m9p2w8r4t6y1u5i0o3a7s"


@pytest.fixture
def mm(tmp_path):
    if not os.access(PROBE, os.X_OK):
        pytest.skip("feedprobe not built: make build/asan/tests/feedprobe")
    proc = subprocess.Popen(["/usr/bin/python3", DOUBLE, "--token", TOKEN],
                            stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    secret = tmp_path / "secret"
    secret.write_bytes(os.urandom(32))
    os.chmod(secret, 0o600)
    token_file = tmp_path / "mm.token"
    token_file.write_text(TOKEN + "\n")
    os.chmod(token_file, 0o600)

    class Env:
        base = "http://127.0.0.1:%d" % port

        def config(self, **extra):
            lines = ["[gateway]", "state = %s" % (tmp_path / "state.db"),
                     "reply_address = feed@example.org", "secret_file = %s" % secret,
                     "[feed]", "backend = mattermost", "url = " + self.base + "/",
                     "token_file = %s" % token_file]
            lines += ["%s = %s" % kv for kv in extra.items()]
            path = tmp_path / "mf.conf"
            path.write_text("\n".join(lines) + "\n")
            return str(path)

        def probe(self, req, **extra):
            out = subprocess.run([PROBE, self.config(**extra)], input=json.dumps(req),
                                 capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            assert "ERROR: AddressSanitizer" not in out.stderr
            assert TOKEN not in out.stderr, "the token reached the log"
            self.log = out.stderr
            return json.loads(out.stdout)

        def deliver(self, *items, **extra):
            return self.probe({"op": "deliver", "items": list(items)}, **extra)["results"]

        def control(self, **c):
            req = urllib.request.Request(self.base + "/__control", data=json.dumps(c).encode(),
                                         method="POST")
            urllib.request.urlopen(req).read()

        def state(self):
            return json.loads(urllib.request.urlopen(self.base + "/__state").read())

        def posts(self):
            return sorted(self.state()["posts"], key=lambda p: p["create_at"])

    yield Env()
    proc.terminate()
    proc.wait()


def post(key="k1", **kw):
    item = {"id": 1, "key": key, "kind": "post", "group": CHANNEL,
            "author_name": "Alice Example", "author_email": "alice@example.org",
            "subject": "Q3 appeal", "text": "The draft is ready.\n\nComments welcome.",
            "hashtags": ["fundraising", "Q3-plan", "#2026"]}
    item.update(kw)
    return item


def comment(parent, key="c1", **kw):
    item = {"id": 2, "key": key, "kind": "comment", "group": CHANNEL, "parent": parent,
            "author_name": "Bob Board", "author_email": "bob@example.org",
            "text": "Looks good to me."}
    item.update(kw)
    return item


def test_post_with_hashtags_and_files(mm):
    res = mm.deliver(post(attachments=[
        {"filename": "q3.pdf", "content_type": "application/pdf", "data": "%PDF-1.4 fake"},
        {"filename": "huge.iso", "size": 3 * 1024 * 1024}]), max_file_size="1M")
    assert res[0]["status"] == "ok", res
    posts = mm.posts()
    assert len(posts) == 1
    p = posts[0]
    assert p["id"] == res[0]["remote_id"] and p["root_id"] == ""
    assert p["message"].startswith("**Q3 appeal**\n\nFrom Alice Example <alice@example.org>")
    assert "Comments welcome." in p["message"]
    assert "[attachment huge.iso (3.0 MB) not uploaded: too large]" in p["message"]
    # what the server recognised as hashtags; a pure number is none
    assert p["hashtags"] == "#fundraising #Q3-plan"
    assert p["props"] == {"mailfeed_key": "k1"}
    files = mm.state()["files"]
    assert [f["name"] for f in files] == ["q3.pdf"]
    assert p["file_ids"] == [files[0]["id"]] and files[0]["post_id"] == p["id"]


def test_reply_under_post(mm):
    pid = mm.deliver(post())[0]["remote_id"]
    res = mm.deliver(comment(pid))
    assert res[0]["status"] == "ok", res
    posts = mm.posts()
    assert len(posts) == 2
    assert posts[1]["root_id"] == pid and posts[1]["id"] == res[0]["remote_id"]
    assert posts[1]["message"].startswith("From Bob Board <bob@example.org>")
    assert "**" not in posts[1]["message"]


def test_rate_limited_is_retried_with_retry_after(mm):
    mm.control(fail_next=[429], retry_after=4)
    res = mm.deliver(post())
    assert res[0]["status"] == "retry" and res[0]["retry_after"] == 4
    assert "limit exceeded" in res[0]["error"]
    assert mm.posts() == []


def test_server_error_and_dropped_connection_are_retried(mm):
    mm.control(fail_next=[503])
    res = mm.deliver(post())
    assert res[0]["status"] == "retry"
    mm.control(drop=1)
    res = mm.deliver(post())
    assert res[0]["status"] == "retry" and "network" in res[0]["error"]
    assert mm.posts() == []


def test_bad_request_is_permanent_with_reason(mm):
    res = mm.deliver(post(group="zzzzzzzzzzzzzzzzzzzzzzzzzz"))
    assert res[0]["status"] == "permanent"
    assert "api.context.permissions.app_error" in res[0]["error"]
    res = mm.deliver(comment("nosuchpostnosuchpostnosuch"))
    assert res[0]["status"] == "permanent"
    assert "api.post.create_post.root_id.app_error" in res[0]["error"]


def test_revoked_token_waits_for_the_admin(mm):
    mm.control(expire_tokens=True)
    res = mm.deliver(post())
    assert res[0]["status"] == "retry" and res[0]["retry_after"] >= 600
    assert "401" in res[0]["error"]
    assert "mattermost.auth_failed" in mm.log


def test_long_text_is_split_into_post_and_replies(mm):
    paras = ["Paragraph %d. " % i + "mot " * 400 for i in range(30)]
    text = "\n\n".join(paras)
    res = mm.deliver(post(text=text))
    assert res[0]["status"] == "ok", res
    posts = mm.posts()
    assert len(posts) >= 3
    root = posts[0]
    assert root["id"] == res[0]["remote_id"]
    for i, p in enumerate(posts[1:]):
        assert p["root_id"] == root["id"]
        assert p["props"] == {"mailfeed_key": "k1#%d" % (i + 2)}
        assert p["message"].startswith("(continued, part %d of %d)" % (i + 2, len(posts)))
    assert all(len(p["message"]) <= 16383 for p in posts)
    assert sum(p["message"].count("mot") for p in posts) == text.count("mot")


def test_long_line_is_cut_at_its_last_word_not_at_an_early_line_end(mm):
    # a line end in the second half of the window but far from its end: the
    # post is cut at the last word that fits, as long as it may be
    text = "x" * 9000 + "\n" + "mot " * 3000
    res = mm.deliver(post(text=text))
    assert res[0]["status"] == "ok", res
    posts = mm.posts()
    assert len(posts) == 2, [len(p["message"]) for p in posts]
    first, second = posts[0]["message"], posts[1]["message"]
    assert first.count("mot") > 1500, len(first)
    assert second.startswith("(continued, part 2 of 2)\n\nmot ")
    assert first.count("mot") + second.count("mot") == 3000


def test_interrupted_split_is_completed_without_duplicates(mm):
    text = "\n\n".join("Block %d " % i + "z" * 5000 for i in range(8))
    # calls: channel lookup, post, part 2 <- fails
    mm.control(skip=2, fail_next=[500])
    res = mm.deliver(post(text=text))
    assert res[0]["status"] == "retry", res
    assert len(mm.posts()) == 1
    again = mm.deliver(post(text=text))
    assert again[0]["status"] == "ok", again
    posts = mm.posts()
    assert again[0]["remote_id"] == posts[0]["id"]
    keys = [p["props"]["mailfeed_key"] for p in posts]
    assert keys == ["k1"] + ["k1#%d" % i for i in range(2, len(posts) + 1)]
    # delivered once more (as after a lost answer): nothing new
    third = mm.deliver(post(text=text))
    assert third[0]["remote_id"] == again[0]["remote_id"]
    assert len(mm.posts()) == len(posts)


def test_reconcile_finds_post_by_prop(mm):
    first = mm.deliver(post("crash-key"))[0]
    r = mm.probe({"op": "reconcile", "item": post("crash-key")})
    assert r == {"found": 1, "remote_id": first["remote_id"]}
    r = mm.probe({"op": "reconcile", "item": post("other-key")})
    assert r == {"found": 0, "remote_id": None}
    mm.control(fail_next=[500])
    assert mm.probe({"op": "reconcile", "item": post("crash-key")})["found"] == -1


def test_read_group(mm):
    since = int(time.time()) - 5
    pid = mm.deliver(post("r1", text="first post"))[0]["remote_id"]
    mm.deliver(comment(pid, key="r2", text="a reply"))
    r = mm.probe({"op": "read", "group": CHANNEL, "since": since})
    assert r["rc"] == 0
    ents = r["entries"]
    assert len(ents) == 2
    assert ents[0]["remote_id"] == pid and ents[0]["parent"] is None
    assert ents[1]["parent"] == pid and "a reply" in ents[1]["text"]
    assert ents[0]["author_name"] == "Feed Gateway"
    assert ents[0]["author_email"] == "feeds@example.org"
    assert ents[0]["url"].endswith("/_redirect/pl/" + pid)
    r = mm.probe({"op": "read", "group": CHANNEL, "since": int(time.time()) + 60})
    assert r == {"rc": 0, "entries": []}


def test_read_group_shows_escaped_text_as_readers_see_it(mm):
    """A digest quotes a post as Mattermost shows it: the escapes that kept
    its Markdown inert are not part of the text."""
    since = int(time.time()) - 5
    mm.deliver(post("esc", text="# not a heading, *not bold*, @channel [x](http://e.example)"))
    assert "\\*not bold\\*" in mm.posts()[-1]["message"]
    ents = mm.probe({"op": "read", "group": CHANNEL, "since": since})["entries"]
    assert "# not a heading, *not bold*, @channel [x](http://e.example)" in ents[0]["text"]


def test_concurrent_delivery(mm):
    items = [post("c%d" % i, text="post number %d" % i) for i in range(8)]
    res = mm.deliver(*items, concurrency="4")
    assert all(r["status"] == "ok" for r in res), res
    by_id = {p["id"]: p for p in mm.posts()}
    assert len(by_id) == 8
    for i, r in enumerate(res):
        assert "post number %d" % i in by_id[r["remote_id"]]["message"]


PDF = {"filename": "agenda.pdf", "content_type": "application/pdf", "data": "%PDF-1.4 agenda"}


def uploads(mm):
    return [r for r in mm.state()["requests"] if r["path"] == "/api/v4/files"]


def test_file_is_uploaded_once_when_the_post_fails(mm):
    # calls: upload, post <- 503
    mm.control(skip=1, fail_next=[503])
    res = mm.deliver(post(attachments=[PDF]))
    assert res[0]["status"] == "retry", res
    assert mm.posts() == []
    fid = mm.state()["files"][0]["id"]
    # the upload is reported at once, to be kept with the attachment
    assert res[0]["uploaded"] == [[0, "%s %s" % (fid, CHANNEL)]]
    again = mm.deliver(post(attachments=[dict(PDF, remote=res[0]["uploaded"][0][1])]))
    assert again[0]["status"] == "ok", again
    assert again[0]["uploaded"] == []
    assert len(uploads(mm)) == 1
    [p] = mm.posts()
    assert p["file_ids"] == [fid] and mm.state()["files"][0]["post_id"] == p["id"]


def test_file_cleaned_up_by_the_server_is_uploaded_anew(mm):
    mm.control(skip=1, fail_next=[503])
    note = mm.deliver(post(attachments=[PDF]))[0]["uploaded"][0][1]
    mm.control(expire_files=True)  # never attached: the server removed it
    res = mm.deliver(post(attachments=[dict(PDF, remote=note)]))
    assert res[0]["status"] == "ok", res
    assert "mattermost.files_refused" in mm.log
    [f] = mm.state()["files"]
    assert res[0]["uploaded"] == [[0, "%s %s" % (f["id"], CHANNEL)]]
    assert len(uploads(mm)) == 2
    [p] = mm.posts()
    assert p["file_ids"] == [f["id"]] and f["post_id"] == p["id"]
    # a note of a file in another channel is not used
    other = "%s 8d3kq9wz1ptb5fjhx6yrcmne4a" % f["id"]
    res = mm.deliver(post("k2", attachments=[dict(PDF, remote=other)]))
    assert res[0]["status"] == "ok" and len(res[0]["uploaded"]) == 1
    assert "mattermost.files_refused" not in mm.log


def test_lost_post_answer_makes_no_second_post_or_file(mm):
    # calls: upload, post <- carried out, its answer lost
    mm.control(skip=1, lose_answer=1)
    res = mm.deliver(post(attachments=[PDF]))
    assert res[0]["status"] == "retry" and "network" in res[0]["error"], res
    # the next attempt looks first, and finds the post with its file
    r = mm.probe({"op": "reconcile", "item": post(attachments=[PDF])})
    [p] = mm.posts()
    assert r == {"found": 1, "remote_id": p["id"]}
    [f] = mm.state()["files"]
    assert p["file_ids"] == [f["id"]] and len(uploads(mm)) == 1


def test_crash_between_upload_and_post_uploads_nothing_twice(mm, dovecot, tmp_path):
    from email.message import EmailMessage
    from conftest import Secret, run_mailfeed, start_daemon, state_db, wait_for, write_config
    cfg = write_config(tmp_path / "d", dovecot, group=CHANNEL, feed={
        "backend": "mattermost", "url": mm.base, "token_file": Secret(TOKEN)})
    m = EmailMessage()
    m["From"] = "Alice Example <alice@example.org>"
    m["To"] = "team@example.org"
    m["Subject"] = "Agenda"
    m["Message-ID"] = "<agenda.1@example.org>"
    m.set_content("The agenda is attached.\n")
    pdf = b"%PDF-1.4\n" + os.urandom(2000)
    m.add_attachment(pdf, maintype="application", subtype="pdf", filename="agenda.pdf")
    mm.control(skip=1, stall=1)  # the upload goes through, the post is held
    dovecot.append("alice", "INBOX", m.as_bytes())
    p = start_daemon(cfg.path)
    try:
        assert wait_for(lambda: any(r["path"] == "/api/v4/posts"
                                    for r in mm.state()["requests"]), 30)
    finally:
        p.kill()
        p.wait(timeout=10)
    con = state_db(cfg)
    [note] = [r[0] for r in con.execute("SELECT remote FROM attachments")]
    con.close()
    [f] = mm.state()["files"]
    assert note == "%s %s" % (f["id"], CHANNEL) and f["post_id"] == ""
    r = run_mailfeed(cfg.path, "run", "--once")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ERROR: AddressSanitizer" not in r.stderr
    [post_] = mm.posts()
    assert post_["file_ids"] == [f["id"]] and len(uploads(mm)) == 1
    assert len(mm.state()["files"]) == 1
    con = state_db(cfg)
    assert [tuple(r) for r in con.execute("SELECT state, remote_id FROM outbox")] == \
        [("delivered", post_["id"])]
    con.close()


def test_hostile_markdown_and_channel_mentions_are_neutralised(mm, tmp_path):
    """A mail written to ping the whole channel, show a tracking image or a
    disguised link arrives as the text it is, unless its mapping allows it."""
    hostile = ("@channel urgent, @here too\n# Pay now\n[bank login](http://evil.example/x)\n"
               "![](https://tracker.example/pixel.png)\nhttps://example.org/a_b stays a link")
    item = post(key="hostile", subject="**Re**: [x](http://evil.example)", text=hostile)
    assert mm.deliver(item)[0]["status"] == "ok"
    msg = mm.posts()[-1]["message"]
    assert "@channel" not in msg and "@here" not in msg
    assert "@\u200bchannel urgent, @\u200bhere too" in msg
    assert "\\# Pay now" in msg
    assert "\\[bank login\\](http://evil.example/x)" in msg
    assert "\\!\\[\\](https://tracker.example/pixel.png)" in msg
    assert "https://example.org/a_b stays a link" in msg
    assert msg.startswith("**\\*\\*Re\\*\\*: \\[x\\](http://evil.example)**\n\n")

    # a mapping to this channel allows both on purpose
    conf = mm.config()
    with open(conf, "a") as f:
        f.write("[account a]\nhost = 127.0.0.1\nusername = u\npassword_file = %s\n"
                "[mailbox team]\naccount = a\nfolder = INBOX\ngroup = %s\n"
                "allow_channel_mentions = yes\nallow_remote_images = yes\n"
                % (tmp_path / "secret", CHANNEL))
    out = subprocess.run([PROBE, conf], input=json.dumps(
        {"op": "deliver", "items": [post(key="allowed", text=hostile)]}),
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    msg = mm.posts()[-1]["message"]
    assert "@channel urgent, @here too" in msg
    assert "![](https://tracker.example/pixel.png)" in msg
    assert "\\[bank login\\]" in msg


def test_reply_carries_all_its_files_and_digest_reads_them(mm):
    """A reply by email with three files: all three go with the reply (up
    to the 5 file ids a post takes), and reading the channel back lists
    each with its name and size for the digest."""
    since = int(time.time()) - 5
    pid = mm.deliver(post("f1", text="agenda"))[0]["remote_id"]
    files = [{"filename": "minutes.pdf", "content_type": "application/pdf",
              "data": "%PDF-1.4 minutes"},
             {"filename": "budget.csv", "content_type": "text/csv", "data": "a,b\n1,2\n"},
             {"filename": "photo.jpg", "content_type": "image/jpeg", "data": "\xff\xd8jpeg"}]
    res = mm.deliver(comment(pid, key="f2", attachments=files))
    assert res[0]["status"] == "ok", res
    reply = [p for p in mm.posts() if p["root_id"] == pid]
    assert len(reply) == 1 and len(reply[0]["file_ids"]) == 3
    names = {f["id"]: f["name"] for f in mm.state()["files"]}
    assert [names[i] for i in reply[0]["file_ids"]] == ["minutes.pdf", "budget.csv",
                                                        "photo.jpg"]
    assert "not uploaded" not in reply[0]["message"]
    ents = mm.probe({"op": "read", "group": CHANNEL, "since": since})["entries"]
    got = [e for e in ents if e["parent"] == pid][0]["files"]
    assert [(f["name"], f["size"]) for f in got] == [
        ("minutes.pdf", 16), ("budget.csv", 8), ("photo.jpg", len("\xff\xd8jpeg".encode()))]
    assert all(f["url"].startswith(mm.base + "/api/v4/files/") for f in got)
    assert [e for e in ents if e["remote_id"] == pid][0]["files"] == []
