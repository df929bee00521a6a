"""The Chatter backend against the Chatter test double on loopback.

The backend is driven through build/asan/tests/feedprobe (config in, items as
JSON on stdin, results as JSON on stdout); the double's /__state shows what
reached the service."""
import json
import os
import subprocess
import time
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PROBE = os.environ.get("FEEDPROBE_BIN", os.path.join(ROOT, "build/asan/tests/feedprobe"))
DOUBLE = os.path.join(HERE, "doubles", "chatter_double.py")
GROUP = "0F9XX0000000001AAA"


@pytest.fixture
def chatter(tmp_path):
    if not os.access(PROBE, os.X_OK):
        pytest.skip("feedprobe not built: make build/asan/tests/feedprobe")
    key = tmp_path / "key.pem"
    pub = tmp_path / "pub.pem"
    subprocess.run(["/usr/bin/openssl", "genrsa", "-out", str(key), "2048"], check=True,
                   capture_output=True)
    os.chmod(key, 0o600)
    subprocess.run(["/usr/bin/openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)],
                   check=True, capture_output=True)
    proc = subprocess.Popen(["/usr/bin/python3", DOUBLE, "--public-key", str(pub)],
                            stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    secret = tmp_path / "secret"
    secret.write_bytes(os.urandom(32))
    os.chmod(secret, 0o600)

    class Env:
        base = "http://127.0.0.1:%d" % port

        def config(self, **extra):
            lines = ["[gateway]", "state = %s" % (tmp_path / "state.db"),
                     "reply_address = feed@example.org", "secret_file = %s" % secret,
                     "[feed]", "backend = chatter", "instance_url = " + self.base,
                     "login_url = " + self.base, "client_id = 3MVG9TESTCLIENT",
                     "private_key_file = %s" % key, "username = integration@acme.example"]
            lines += ["%s = %s" % kv for kv in extra.items()]
            path = tmp_path / "mf.conf"
            path.write_text("\n".join(lines) + "\n")
            return str(path)

        def probe(self, req, **extra):
            out = subprocess.run([PROBE, self.config(**extra)], input=json.dumps(req),
                                 capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            assert "ERROR: AddressSanitizer" not in out.stderr
            assert "Bearer " not in out.stderr, "a token reached the log"
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

    yield Env()
    proc.terminate()
    proc.wait()


def post(key="k1", **kw):
    item = {"id": 1, "key": key, "kind": "post", "group": GROUP, "author_name": "Alice Example",
            "author_email": "alice@example.org", "subject": "Q3 appeal",
            "text": "The draft is ready, see https://example.org/q3.\n\nComments welcome.",
            "hashtags": ["fundraising", "Q3"]}
    item.update(kw)
    return item


def comment(parent, key="c1", **kw):
    item = {"id": 2, "key": key, "kind": "comment", "group": GROUP, "parent": parent,
            "author_name": "Bob Board", "author_email": "bob@example.org",
            "text": "Looks good to me."}
    item.update(kw)
    return item


def segments(el):
    return el["_input"]["body"]["messageSegments"]


def test_post_with_hashtags_links_and_files(chatter):
    big = 2 * 1024 * 1024
    res = chatter.deliver(post(attachments=[
        {"filename": "q3.pdf", "content_type": "application/pdf", "data": "%PDF-1.4 fake"},
        {"filename": "video.mp4", "size": big}]), max_file_size="1M")
    assert res[0]["status"] == "ok", res
    st = chatter.state()
    assert len(st["posts"]) == 1
    el = st["posts"][0]
    assert el["id"] == res[0]["remote_id"]
    assert el["parent"]["id"] == GROUP
    segs = segments(el)
    tags = [s["tag"] for s in segs if s["type"] == "Hashtag"]
    assert tags == ["fundraising", "Q3"]
    assert {"type": "Link", "url": "https://example.org/q3"} in segs
    assert segs[0] == {"type": "MarkupBegin", "markupType": "Paragraph"}
    text = el["body"]["text"]
    assert "From Alice Example <alice@example.org>" in text
    assert "Q3 appeal" in text and "Comments welcome." in text
    assert "[attachment video.mp4 (2.0 MB) not uploaded: too large]" in text
    # only what a person wrote: no key or marker of the gateway's own
    assert "mailfeed" not in text and "k1" not in text
    assert text.endswith("#fundraising #Q3")
    # only the small file went up, and it is attached to the post
    assert [f["title"] for f in st["files"]] == ["q3.pdf"]
    assert el["capabilities"]["files"]["items"][0]["id"] == st["files"][0]["id"]


def test_comment_under_post(chatter):
    pid = chatter.deliver(post())[0]["remote_id"]
    res = chatter.deliver(comment(pid, hashtags=["followup"]))
    assert res[0]["status"] == "ok", res
    st = chatter.state()
    assert len(st["posts"]) == 1
    c = st["comments"][0]
    assert c["id"] == res[0]["remote_id"] and c["feedElement"]["id"] == pid
    assert "From Bob Board <bob@example.org>" in c["body"]["text"]
    assert "Looks good to me." in c["body"]["text"]
    assert {"type": "Hashtag", "tag": "followup"} in segments(c)


def test_expired_session_renews_token_once(chatter):
    # tokens die after the first post: the second gets 401 INVALID_SESSION_ID
    chatter.control(expire_after=1)
    res = chatter.deliver(post("a"), post("b"), concurrency="1")
    assert [r["status"] for r in res] == ["ok", "ok"], res
    st = chatter.state()
    assert len(st["posts"]) == 2
    assert st["tokens_issued"] == ["integration@acme.example"] * 2
    assert "chatter.session_expired" in chatter.log


def test_session_refused_twice_is_retried(chatter):
    chatter.control(reject_sessions=True)
    res = chatter.deliver(post("a"))
    assert res[0]["status"] == "retry"
    assert "INVALID_SESSION_ID" in res[0]["error"]
    st = chatter.state()
    assert st["tokens_issued"] == ["integration@acme.example"] * 2
    assert st["posts"] == []


def test_throttled_is_retried_with_retry_after(chatter):
    chatter.control(fail_next=[429], retry_after=7)
    res = chatter.deliver(post())
    assert res[0]["status"] == "retry"
    assert res[0]["retry_after"] == 7
    chatter.control(fail_next=[{"status": 503, "errorCode": "SERVER_UNAVAILABLE",
                                "message": "hourly limit"}], retry_after=30)
    res = chatter.deliver(post())
    assert res[0]["status"] == "retry" and res[0]["retry_after"] == 30
    assert "SERVER_UNAVAILABLE: hourly limit" in res[0]["error"]
    assert chatter.state()["posts"] == []


def test_daily_limit_403_is_retried(chatter):
    chatter.control(fail_next=[{"status": 403, "errorCode": "REQUEST_LIMIT_EXCEEDED",
                                "message": "TotalRequests Limit exceeded."}])
    res = chatter.deliver(post())
    assert res[0]["status"] == "retry" and res[0]["retry_after"] >= 60


def test_server_error_and_dropped_connection_are_retried(chatter):
    chatter.control(fail_next=[500])
    res = chatter.deliver(post())
    assert res[0]["status"] == "retry"
    assert "UNKNOWN_EXCEPTION" in res[0]["error"]
    chatter.control(drop=2)  # the token call, then the post
    res = chatter.deliver(post())
    assert res[0]["status"] == "retry"
    assert res[0]["error"]


def test_bad_request_is_permanent_with_code_and_message(chatter):
    chatter.control(fail_next=[{"status": 400, "errorCode": "INVALID_ID_FIELD",
                                "message": "Invalid subjectId"}])
    res = chatter.deliver(post())
    assert res[0]["status"] == "permanent"
    assert "INVALID_ID_FIELD: Invalid subjectId" in res[0]["error"]
    # a group that does not exist: the real answer of the service
    res = chatter.deliver(post(group="0F9XX0000000099AAA"))
    assert res[0]["status"] == "permanent" and "NOT_FOUND" in res[0]["error"]


def test_refused_token_is_a_slow_retry_with_reason(chatter):
    chatter.control(fail_token_next=[{"status": 400, "error": "invalid_grant",
                                      "error_description": "user hasn't approved this consumer"}])
    res = chatter.deliver(post())
    assert res[0]["status"] == "retry"
    assert res[0]["retry_after"] >= 600
    assert "invalid_grant: user hasn't approved this consumer" in res[0]["error"]
    assert "chatter.auth_refused" in chatter.log


def test_long_text_is_split_into_post_and_continuations(chatter):
    paras = ["Paragraph %d. " % i + "word " * 300 for i in range(40)]
    text = "\n\n".join(paras)
    assert len(text) > 50000
    res = chatter.deliver(post(text=text))
    assert res[0]["status"] == "ok", res
    st = chatter.state()
    assert len(st["posts"]) == 1
    parts = [st["posts"][0]] + st["comments"]
    assert len(st["comments"]) >= 5
    for p in parts:
        assert sum(len(s.get("text", "")) + len(s.get("url", "")) for s in segments(p)) <= 10000
    assert all(c["feedElement"]["id"] == res[0]["remote_id"] for c in st["comments"])
    joined = " ".join(p["body"]["text"] for p in parts)
    for para in paras:
        assert para.split(".")[0] + "." in joined
    assert joined.count("word") == text.count("word")
    assert "part 2 of" in st["comments"][0]["body"]["text"]


def test_interrupted_split_is_completed_without_duplicates(chatter):
    text = "\n\n".join("Block %d " % i + "x" * 3000 for i in range(8))
    # data calls: feed lookup, post, lookup of part 2, part 2 <- fails
    chatter.control(skip=3, fail_next=[500])
    first = chatter.deliver(post(text=text))
    assert first[0]["status"] == "retry", first
    st = chatter.state()
    assert len(st["posts"]) == 1 and st["comments"] == []
    again = chatter.deliver(post(text=text))
    assert again[0]["status"] == "ok", again
    st = chatter.state()
    assert len(st["posts"]) == 1
    assert again[0]["remote_id"] == st["posts"][0]["id"]
    n = len(st["comments"])
    assert n >= 2
    heads = [c["body"]["text"].split("\n", 1)[0] for c in st["comments"]]
    assert heads == ["(continued, part %d of %d)" % (i + 2, n + 1) for i in range(n)]
    assert not any("mailfeed" in c["body"]["text"] for c in st["comments"])
    # and once more: everything is there, nothing is added
    assert chatter.deliver(post(text=text))[0]["remote_id"] == again[0]["remote_id"]
    st = chatter.state()
    assert len(st["posts"]) == 1 and len(st["comments"]) == n


def test_post_as_author_uses_soql_and_author_token(chatter):
    chatter.control(users=[{"Id": "005XX0000000002AAA", "Username": "o'brien@acme.example",
                            "Email": "o'brien@example.org", "Name": "Pat O'Brien",
                            "IsActive": True, "authorized": True}])
    res = chatter.deliver(post(author_name="Pat O'Brien", author_email="o'brien@example.org"),
                          post_as="author")
    assert res[0]["status"] == "ok", res
    st = chatter.state()
    el = st["posts"][0]
    assert el["actor"]["id"] == "005XX0000000002AAA"
    assert "From " not in el["body"]["text"]
    assert st["queries"] == ["SELECT Id, Username FROM User WHERE Email = "
                             "'o\\'brien@example.org' AND IsActive = true"]
    assert "o'brien@acme.example" in st["tokens_issued"]


def test_post_as_author_falls_back_to_integration_user(chatter):
    chatter.control(users=[{"Id": "005XX0000000003AAA", "Username": "carol@acme.example",
                            "Email": "carol@example.org", "Name": "Carol",
                            "IsActive": True, "authorized": False}])
    res = chatter.deliver(post(author_name="Carol", author_email="carol@example.org"),
                          post(key="k2", author_name="Dan", author_email="dan@example.org"),
                          post_as="author", concurrency="1")
    assert [r["status"] for r in res] == ["ok", "ok"], res
    st = chatter.state()
    for el, who in zip(st["posts"], ["Carol <carol@example.org>", "Dan <dan@example.org>"]):
        assert el["actor"]["id"] == "005XX0000000001AAA"
        assert "From " + who in el["body"]["text"]


def test_reconcile_finds_item_after_crash(chatter):
    first = chatter.deliver(post("crash-key"))[0]
    assert first["status"] == "ok"
    pid = first["remote_id"]
    c = chatter.deliver(comment(pid, key="crash-comment"))[0]
    # a new process (the gateway restarted) asks whether they made it
    r = chatter.probe({"op": "reconcile", "item": post("crash-key")})
    assert r == {"found": 1, "remote_id": pid}
    r = chatter.probe({"op": "reconcile", "item": comment(pid, key="crash-comment")})
    assert r == {"found": 1, "remote_id": c["remote_id"]}
    # recognised by what the service shows: another text is another item
    r = chatter.probe({"op": "reconcile", "item": post("crash-key-2", text="Other words.")})
    assert r == {"found": 0, "remote_id": None}
    r = chatter.probe({"op": "reconcile", "item": post("crash-key-3", subject="Q4 appeal")})
    assert r == {"found": 0, "remote_id": None}
    # the same text from another sender is not ours either
    r = chatter.probe({"op": "reconcile", "item": post("crash-key-4", author_email="eve@example.org")})
    assert r == {"found": 0, "remote_id": None}
    chatter.control(fail_next=[503])
    r = chatter.probe({"op": "reconcile", "item": post("crash-key")})
    assert r["found"] == -1


def test_same_words_twice_are_two_comments(chatter):
    """Two people's (or one person's) identical replies are two comments: an
    element that another item already holds, or that is older than the item,
    is never taken for an earlier attempt."""
    pid = chatter.deliver(post("p-same"))[0]["remote_id"]
    first = chatter.deliver(comment(pid, key="same-1", text="+1"))[0]
    assert first["status"] == "ok"
    r = chatter.probe({"op": "reconcile",
                       "item": comment(pid, key="same-2", text="+1", known=[first["remote_id"]])})
    assert r == {"found": 0, "remote_id": None}
    later = int(time.time()) + 3600
    r = chatter.probe({"op": "reconcile",
                       "item": comment(pid, key="same-2", text="+1", created=later)})
    assert r == {"found": 0, "remote_id": None}
    second = chatter.deliver(comment(pid, key="same-2", text="+1", known=[first["remote_id"]]))
    assert second[0]["status"] == "ok" and second[0]["remote_id"] != first["remote_id"]
    assert len(chatter.state()["comments"]) == 2


def test_lost_answer_found_past_the_newest_hundred(chatter):
    """A post whose answer was lost is found even when 150 newer posts came
    after it: the group's feed is read page after page."""
    lost = post("deep", text="The one whose answer was lost.")
    assert chatter.deliver(lost)[0]["status"] == "ok"
    pid = chatter.state()["posts"][0]["id"]
    chatter.deliver(*[post("n%d" % i, text="newer %d" % i) for i in range(150)],
                    concurrency="8")
    r = chatter.probe({"op": "reconcile", "item": lost})
    assert r == {"found": 1, "remote_id": pid}


def test_read_group_returns_posts_and_comments_oldest_first(chatter):
    since = int(time.time()) - 5
    pid = chatter.deliver(post("r1", text="first post"))[0]["remote_id"]
    chatter.deliver(comment(pid, key="r2", text="a reply"))
    r = chatter.probe({"op": "read", "group": GROUP, "since": since})
    assert r["rc"] == 0
    ents = r["entries"]
    assert [e["remote_id"] for e in ents][0] == pid
    assert ents[1]["parent"] == pid and "a reply" in ents[1]["text"]
    assert "mailfeed:" not in ents[0]["text"] and "first post" in ents[0]["text"]
    assert ents[0]["author_name"] == "Feed Integration"
    assert ents[0]["url"].endswith("/" + pid)
    r = chatter.probe({"op": "read", "group": GROUP, "since": int(time.time()) + 60})
    assert r == {"rc": 0, "entries": []}


def test_concurrent_delivery(chatter):
    items = [post("c%d" % i, text="post number %d" % i) for i in range(8)]
    res = chatter.deliver(*items, concurrency="4")
    assert all(r["status"] == "ok" for r in res), res
    st = chatter.state()
    assert len({r["remote_id"] for r in res}) == 8
    by_id = {p["id"]: p for p in st["posts"]}
    for i, r in enumerate(res):
        assert "post number %d" % i in by_id[r["remote_id"]]["body"]["text"]


def test_post_as_author_never_for_an_unverified_sender(chatter):
    """Anyone can write "From: boss@…": without the mail server's word for
    it the post is the integration user's, naming the sender as unverified."""
    chatter.control(users=[{"Id": "005XX0000000002AAA", "Username": "boss@acme.example",
                            "Email": "boss@example.org", "Name": "The Boss",
                            "IsActive": True, "authorized": True}])
    res = chatter.deliver(post(author_name="The Boss", author_email="boss@example.org",
                               verified=False), post_as="author")
    assert res[0]["status"] == "ok", res
    st = chatter.state()
    el = st["posts"][0]
    assert el["actor"]["id"] == "005XX0000000001AAA"
    assert "From The Boss <boss@example.org> (unverified)" in el["body"]["text"]
    assert "boss@acme.example" not in st["tokens_issued"]
    assert st["queries"] == []


def test_files_read_back_for_digests(chatter):
    """A post's files (capabilities.files) and a comment's one file
    (capabilities.content) come back with names and sizes; a comment's
    further files are listed in its text as notes (one file per comment)."""
    since = int(time.time()) - 5
    pid = chatter.deliver(post("fr1", text="two files", attachments=[
        {"filename": "q3.pdf", "content_type": "application/pdf", "data": "%PDF-1.4 fake"},
        {"filename": "plan.txt", "content_type": "text/plain", "data": "plan"}]))[0]["remote_id"]
    res = chatter.deliver(comment(pid, key="fr2", attachments=[
        {"filename": "minutes.pdf", "content_type": "application/pdf", "data": "%PDF minutes"},
        {"filename": "extra.txt", "content_type": "text/plain", "data": "more"}]))
    assert res[0]["status"] == "ok", res
    ents = chatter.probe({"op": "read", "group": GROUP, "since": since})["entries"]
    by_id = {e["remote_id"]: e for e in ents}
    assert [(f["name"], f["size"]) for f in by_id[pid]["files"]] == [("q3.pdf", 13),
                                                                     ("plan.txt", 4)]
    c = [e for e in ents if e["parent"] == pid][0]
    assert [(f["name"], f["size"]) for f in c["files"]] == [("minutes.pdf", 12)]
    assert "[attachment extra.txt (4 bytes) not uploaded: too many files]" in c["text"]
    assert all(f["url"].split("/")[-1].startswith("069") for f in c["files"])
