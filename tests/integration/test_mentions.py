"""[feed] mentions: To/Cc addresses of feed users become mentions.

End to end, a mail in a Dovecot folder goes through `mailfeed run --once` to
the Chatter or Mattermost double; the post there must mention exactly the
recipients that are active users, and nobody when mentions = no.  The
details of the backends (caching of look-ups, failed look-ups, long texts,
a refused mention) are driven through build/asan/tests/feedprobe."""
import base64
import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from conftest import run_mailfeed, state_db, write_config

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PROBE = os.environ.get("FEEDPROBE_BIN", os.path.join(ROOT, "build/asan/tests/feedprobe"))
CHATTER = os.path.join(HERE, "doubles", "chatter_double.py")
MATTERMOST = os.path.join(HERE, "doubles", "mattermost_double.py")
GROUP = "0F9XX0000000001AAA"
CHANNEL = "4xp9fdt77pncbef59f4k1qe83o"
MM_TOKEN = "xq7k3m9p2w8r4t6y1u5i0o3a7s"

ALICE = "005XX0000000002AAA"
BOB = "005XX0000000003AAA"
SF_USERS = [
    {"Id": ALICE, "Username": "alice@acme.example", "Email": "alice@example.org",
     "Name": "Alice Example", "IsActive": True},
    {"Id": BOB, "Username": "bob@acme.example", "Email": "bob@example.org",
     "Name": "Bob Board", "IsActive": True},
    {"Id": "005XX0000000004AAA", "Username": "carol@acme.example",
     "Email": "carol@example.org", "Name": "Carol Gone", "IsActive": False},
]
MM_USERS = [  # alice@example.org is a user of the double from the start
    {"username": "bob.board", "email": "bob@example.org"},
    {"username": "carol", "email": "carol@example.org", "delete_at": 1770000000000},
]

MAIL = ("From: Dave Donor <dave@example.org>\r\n"
        "To: Team <team@example.org>, Alice <alice@example.org>\r\n"
        "Cc: unknown@example.net, Bob <BOB@example.org>, carol@example.org,\r\n"
        " Alice Again <ALICE@example.org>, dave@example.org\r\n"
        "Delivered-To: team@example.org\r\n"
        "Subject: Q3 appeal\r\nMessage-ID: <q3@example.org>\r\n"
        "Date: Mon, 23 Nov 2026 07:00:00 +0000\r\n\r\n"
        "The draft is ready.\r\n").encode()
# what the pipeline keeps of MAIL for mentions: To then Cc, each once, without
# the sender and the address the mail came through
CANDIDATES = ["alice@example.org", "unknown@example.net", "bob@example.org",
              "carol@example.org"]


def http_json(url, body=None):
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                 method="GET" if body is None else "POST")
    return json.loads(urllib.request.urlopen(req).read())


class Double:
    def __init__(self, script, *args):
        self.proc = subprocess.Popen(["/usr/bin/python3", script, *args],
                                     stdout=subprocess.PIPE, text=True)
        self.base = "http://127.0.0.1:%d" % int(self.proc.stdout.readline())

    def control(self, **c):
        http_json(self.base + "/__control", c)

    def state(self):
        return http_json(self.base + "/__state")

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        self.proc.stdout.close()


@pytest.fixture
def chatter(tmp_path):
    key, pub = tmp_path / "key.pem", tmp_path / "pub.pem"
    subprocess.run(["/usr/bin/openssl", "genrsa", "-out", str(key), "2048"], check=True,
                   capture_output=True)
    os.chmod(key, 0o600)
    subprocess.run(["/usr/bin/openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)],
                   check=True, capture_output=True)
    d = Double(CHATTER, "--public-key", str(pub))
    d.control(users=SF_USERS)
    d.feed = {"backend": "chatter", "instance_url": d.base, "login_url": d.base,
              "client_id": "3MVG9TESTCLIENT", "private_key_file": str(key),
              "username": "integration@acme.example"}
    yield d
    d.stop()


@pytest.fixture
def mattermost(tmp_path):
    d = Double(MATTERMOST, "--token", MM_TOKEN)
    d.control(users=MM_USERS)
    token = tmp_path / "mm.token"
    token.write_text(MM_TOKEN + "\n")
    os.chmod(token, 0o600)
    d.feed = {"backend": "mattermost", "url": d.base, "token_file": str(token)}
    yield d
    d.stop()


def run_once(dovecot, tmp_path, double, group, mentions):
    dovecot.create_folder("alice", "Team")
    dovecot.append("alice", "Team", MAIL)
    cfg = write_config(tmp_path, dovecot, folder="Team", group=group,
                       feed=dict(double.feed, mentions=mentions))
    r = run_mailfeed(cfg.path, "run", "--once", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ERROR: AddressSanitizer" not in r.stderr
    con = state_db(cfg)
    rows = [{"state": s, "r": json.dumps(json.loads(p).get("recipients"))}
            for s, p in con.execute("SELECT o.state, t.payload FROM outbox o"
                                    " JOIN outbox_payloads t ON t.item = o.id").fetchall()]
    con.close()
    assert [row["state"] for row in rows] == ["delivered"], r.stderr
    assert json.loads(rows[0]["r"]) == CANDIDATES
    return r.stderr


def mention_ids(element):
    return [s["id"] for s in element["_input"]["body"]["messageSegments"]
            if s["type"] == "Mention"]


def user_queries(st):
    return [q for q in st["queries"] if "FROM User WHERE Email" in q]


def test_chatter_mentions_known_recipients(dovecot, tmp_path, chatter):
    run_once(dovecot, tmp_path, chatter, GROUP, "yes")
    st = chatter.state()
    assert len(st["posts"]) == 1
    post = st["posts"][0]
    # exactly the active users among To/Cc, in header order, each once
    assert mention_ids(post) == [ALICE, BOB]
    assert st["mentions"] == [{"element": post["id"], "id": ALICE},
                              {"element": post["id"], "id": BOB}]
    text = post["body"]["text"]
    assert "To: @Alice Example, @Bob Board" in text
    # nobody else is named, and no address leaks into the post
    for leak in ("unknown@example.net", "carol", "Carol", "team@example.org"):
        assert leak not in text
    # one look-up per candidate (the sender and the list address are none),
    # each for an active user
    queries = user_queries(st)
    assert len(queries) == 4
    assert all(q.endswith("AND IsActive = true") for q in queries)
    assert not any("dave@" in q or "team@" in q for q in queries)


def test_chatter_mentions_off(dovecot, tmp_path, chatter):
    run_once(dovecot, tmp_path, chatter, GROUP, "no")
    st = chatter.state()
    assert len(st["posts"]) == 1
    assert mention_ids(st["posts"][0]) == [] and st["mentions"] == []
    assert "To: @" not in st["posts"][0]["body"]["text"]
    assert user_queries(st) == []


def test_mattermost_mentions_known_recipients(dovecot, tmp_path, mattermost):
    run_once(dovecot, tmp_path, mattermost, CHANNEL, "yes")
    st = mattermost.state()
    assert len(st["posts"]) == 1
    msg = st["posts"][0]["message"]
    lines = msg.split("\n")
    assert "To: @alice @bob.board" in lines
    # the deactivated account and the unknown address are not named
    assert "@carol" not in msg and "unknown@example.net" not in msg
    lookups = [r["path"] for r in st["requests"] if r["path"].startswith("/api/v4/users/email/")]
    assert len(lookups) == 4


def test_mattermost_mentions_off(dovecot, tmp_path, mattermost):
    run_once(dovecot, tmp_path, mattermost, CHANNEL, "no")
    st = mattermost.state()
    assert len(st["posts"]) == 1
    assert "To: @" not in st["posts"][0]["message"]
    assert not [r for r in st["requests"] if r["path"].startswith("/api/v4/users/email/")]


# --- backend details through feedprobe -----------------------------------

def probe(tmp_path, double, items, **extra):
    if not os.access(PROBE, os.X_OK):
        pytest.skip("feedprobe not built: make build/asan/tests/feedprobe")
    secret = tmp_path / "secret"
    secret.write_bytes(os.urandom(32))
    os.chmod(secret, 0o600)
    lines = ["[gateway]", "state = %s" % (tmp_path / "state.db"),
             "reply_address = feed@example.org", "secret_file = %s" % secret, "[feed]"]
    lines += ["%s = %s" % kv for kv in dict(double.feed, mentions="yes", **extra).items()]
    conf = tmp_path / "probe.conf"
    conf.write_text("\n".join(lines) + "\n")
    out = subprocess.run([PROBE, str(conf)], input=json.dumps({"op": "deliver", "items": items}),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "ERROR: AddressSanitizer" not in out.stderr
    double.log = out.stderr
    return json.loads(out.stdout)["results"]


def item(key, group, kind="post", **kw):
    it = {"id": 1, "key": key, "kind": kind, "group": group, "author_name": "Dave Donor",
          "author_email": "dave@example.org", "subject": "Q3 appeal",
          "text": "The draft is ready.", "recipients": CANDIDATES}
    it.update(kw)
    return it


def test_chatter_lookups_are_cached(tmp_path, chatter):
    res = probe(tmp_path, chatter, [item("k1", GROUP), item("k2", GROUP)], concurrency=1)
    assert [r["status"] for r in res] == ["ok", "ok"], res
    st = chatter.state()
    assert [mention_ids(p) for p in st["posts"]] == [[ALICE, BOB], [ALICE, BOB]]
    # four addresses, asked once each: users and non-users alike are remembered
    assert len(user_queries(st)) == 4


def test_chatter_address_with_quote_is_escaped(tmp_path, chatter):
    oid = "005XX0000000005AAA"
    chatter.control(users=[{"Id": oid, "Username": "sean@acme.example",
                            "Email": "o'brien@example.org", "Name": "Sean O'Brien",
                            "IsActive": True}])
    res = probe(tmp_path, chatter, [item("k1", GROUP, recipients=["o'brien@example.org"])])
    assert res[0]["status"] == "ok", res
    st = chatter.state()
    assert mention_ids(st["posts"][0]) == [oid]
    assert user_queries(st) == ["SELECT Id, Username FROM User WHERE Email = "
                                "'o\\'brien@example.org' AND IsActive = true"]


def test_chatter_failed_lookup_is_retried(tmp_path, chatter):
    chatter.control(fail_next=[503], skip=1)  # the first look-up passes, the second fails
    res = probe(tmp_path, chatter, [item("k1", GROUP)])
    assert res[0]["status"] == "retry", res
    assert "chatter user lookup" in res[0]["error"]
    assert chatter.state()["posts"] == [] and chatter.state()["files"] == []
    res = probe(tmp_path, chatter, [item("k1", GROUP)])
    assert res[0]["status"] == "ok", res
    assert mention_ids(chatter.state()["posts"][0]) == [ALICE, BOB]


def test_chatter_mentions_in_first_part_and_comments(tmp_path, chatter):
    long_text = "\n\n".join("Paragraph %d. " % i + "x" * 900 for i in range(25))
    res = probe(tmp_path, chatter, [item("k1", GROUP, text=long_text)])
    assert res[0]["status"] == "ok", res
    st = chatter.state()
    assert len(st["posts"]) == 1 and len(st["comments"]) >= 2  # continuations
    assert mention_ids(st["posts"][0]) == [ALICE, BOB]
    assert all(mention_ids(c) == [] for c in st["comments"])
    # a comment (a reply in the thread) mentions its own recipients
    res = probe(tmp_path, chatter, [item("c1", GROUP, kind="comment",
                                         parent=res[0]["remote_id"],
                                         recipients=["bob@example.org"])])
    assert res[0]["status"] == "ok", res
    c = [c for c in chatter.state()["comments"] if c["id"] == res[0]["remote_id"]][0]
    assert mention_ids(c) == [BOB]


def test_chatter_refused_mention_does_not_cost_the_post(tmp_path, chatter):
    # the service refuses the post with its mentions (the four look-ups pass)
    chatter.control(fail_next=[{"status": 400, "errorCode": "INVALID_ID_FIELD",
                                "message": "Mention id is not valid"}], skip=4)
    res = probe(tmp_path, chatter, [item("k1", GROUP)])
    assert res[0]["status"] == "ok", res
    st = chatter.state()
    assert len(st["posts"]) == 1 and mention_ids(st["posts"][0]) == []
    assert "chatter.mentions_refused" in chatter.log


def test_chatter_mentions_written_in_the_text(tmp_path, chatter):
    """"@First Last" and "@address" in the text become mentions when exactly
    one active user matches; an unknown, inactive or ambiguous one stays text."""
    chatter.control(users=[
        {"Id": "005XX0000000006AAA", "Username": "lee1@acme.example", "Email": "lee1@example.org",
         "Name": "Ann Lee", "IsActive": True},
        {"Id": "005XX0000000007AAA", "Username": "lee2@acme.example", "Email": "lee2@example.org",
         "Name": "Ann Lee", "IsActive": True}])
    text = ("Thanks @Alice Example for the draft; @bob@example.org please check the numbers.\n\n"
            "@Carol Gone left, @Ann Lee is two people, @Nobody Here is unknown, "
            "and me@example.org is no mention.")
    res = probe(tmp_path, chatter, [item("k1", GROUP, text=text, recipients=[])])
    assert res[0]["status"] == "ok", res
    st = chatter.state()
    el = st["posts"][0]
    assert mention_ids(el) == [ALICE, BOB]
    body = el["body"]["text"]
    assert "Thanks @Alice Example for the draft; @Bob Board please check" in body
    for words in ("@Carol Gone left", "@Ann Lee is two people", "@Nobody Here is unknown",
                  "me@example.org is no mention"):
        assert words in body
    asked = st["queries"]
    assert "SELECT Id, Username FROM User WHERE Name = 'Alice Example' AND IsActive = true" \
        in asked
    assert "SELECT Id, Username FROM User WHERE Email = 'bob@example.org' AND IsActive = true" \
        in asked


def test_chatter_lost_answer_with_mentions_in_the_text(tmp_path, chatter):
    """A post with written mentions whose answer was lost is recognised, not
    posted a second time (the service shows the names, not the words)."""
    text = "Over to you, @Alice Example: the figures are in."
    chatter.control(lose_answer=1, lose_after=1)  # the look-up passes, the post's answer is lost
    res = probe(tmp_path, chatter, [item("k1", GROUP, text=text, recipients=[])])
    assert res[0]["status"] == "retry", res
    assert len(chatter.state()["posts"]) == 1
    rec = subprocess.run([PROBE, str(tmp_path / "probe.conf")],
                         input=json.dumps({"op": "reconcile",
                                           "item": item("k1", GROUP, text=text, recipients=[])}),
                         capture_output=True, text=True, timeout=60)
    assert json.loads(rec.stdout)["found"] == 1, rec.stdout + rec.stderr
    assert json.loads(rec.stdout)["remote_id"] == chatter.state()["posts"][0]["id"]


def test_chatter_double_takes_only_user_or_group_ids(chatter):
    """The double holds Mention segments to the documented id rules."""
    key = serialization.load_pem_private_key(
        open(chatter.feed["private_key_file"], "rb").read(), None)
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": "RS256"}).encode()) + "." + b64(json.dumps(
        {"iss": "3MVG9TESTCLIENT", "sub": "integration@acme.example",
         "aud": "https://login.salesforce.com", "exp": int(time.time()) + 120}).encode())
    jwt = head + "." + b64(key.sign(head.encode(), padding.PKCS1v15(), hashes.SHA256()))
    form = urllib.parse.urlencode({"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                   "assertion": jwt}).encode()
    tok = json.loads(urllib.request.urlopen(urllib.request.Request(
        chatter.base + "/services/oauth2/token", data=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"})).read())["access_token"]

    def post(mention):
        body = {"feedElementType": "FeedItem", "subjectId": GROUP, "body": {"messageSegments": [
            {"type": "Text", "text": "To: "}, {"type": "Mention", "id": mention}]}}
        req = urllib.request.Request(
            chatter.base + "/services/data/v62.0/chatter/feed-elements",
            data=json.dumps(body).encode(), headers={"Content-Type": "application/json",
                                                     "Authorization": "Bearer " + tok})
        try:
            return urllib.request.urlopen(req).status, None
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    for bad in ("005XX0000000002", "005XX0000000002AAAA", "alice@example.org",
                "0D5XX0000000001AAA", "005XX0000000099AAA"):
        status, err = post(bad)
        assert status == 400 and err[0]["errorCode"] == "INVALID_ID_FIELD", (bad, err)
    assert post(ALICE)[0] == 201
    assert post(ALICE[:15])[0] == 400  # a 15-character id must also be known
    assert post(GROUP)[0] == 201
    assert [m["id"] for m in chatter.state()["mentions"]] == [ALICE, GROUP]


def test_mattermost_failed_lookup_is_retried(tmp_path, mattermost):
    mattermost.control(fail_next=[500])
    res = probe(tmp_path, mattermost, [item("k1", CHANNEL)])
    assert res[0]["status"] == "retry", res
    assert "mattermost user lookup" in res[0]["error"]
    assert mattermost.state()["posts"] == []
    res = probe(tmp_path, mattermost, [item("k1", CHANNEL), item("k2", CHANNEL)],
                concurrency=1)
    assert [r["status"] for r in res] == ["ok", "ok"], res
    posts = sorted(mattermost.state()["posts"], key=lambda p: p["create_at"])
    assert all("To: @alice @bob.board" in p["message"] for p in posts)
    # the second post's look-ups came from the cache
    lookups = [r for r in mattermost.state()["requests"]
               if r["path"].startswith("/api/v4/users/email/")]
    assert len(lookups) == 1 + 4


def test_inspect_shows_mention_candidates(tmp_path):
    eml = tmp_path / "q3.eml"
    eml.write_bytes(MAIL.replace(b"Cc: ", b"Cc: feed+abc@example.org, "))
    cfg = write_config(tmp_path)
    r = run_mailfeed(cfg.path, "inspect", "--json", str(eml))
    assert r.returncode == 0, r.stderr
    # the reply address of the gateway is nobody to mention
    assert json.loads(r.stdout)["mention_candidates"] == CANDIDATES
    r = run_mailfeed(cfg.path, "inspect", str(eml))
    assert r.returncode == 0, r.stderr
    assert ("Mention candidates (To/Cc looked up with mentions = yes): " +
            " ".join(CANDIDATES)) in r.stdout.splitlines()


def test_preview_shows_mention_candidates(dovecot, tmp_path):
    dovecot.create_folder("alice", "Team")
    dovecot.append("alice", "Team", MAIL)
    cfg = write_config(tmp_path, dovecot, folder="Team")
    r = run_mailfeed(cfg.path, "preview", "team", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0].get("mention_candidates") == CANDIDATES, r.stdout
    r = run_mailfeed(cfg.path, "preview", "team")
    assert r.returncode == 0, r.stderr
    assert ("  mentions: " + ", ".join(CANDIDATES) +
            " (those who are users of the feed service; mentions = no)") in r.stdout


def test_mattermost_mentions_written_in_the_text(tmp_path, mattermost):
    """"@First Last" and "@address" in the text become "@username" when
    exactly one active user has that full name or address; the rest stays."""
    mattermost.control(users=[
        {"username": "ann.lee", "email": "ann1@example.org", "first_name": "Ann",
         "last_name": "Lee"},
        {"username": "ann.lee2", "email": "ann2@example.org", "first_name": "Ann",
         "last_name": "Lee"}])
    text = ("Thanks @Alice Example, and @bob@example.org please check.\n\n"
            "@Ann Lee is two people and @Nobody Here is unknown.")
    res = probe(tmp_path, mattermost, [item("k1", CHANNEL, text=text, recipients=[])])
    assert res[0]["status"] == "ok", res
    msg = mattermost.state()["posts"][0]["message"]
    assert "Thanks @alice, and @bob.board please check." in msg, msg
    assert "@Ann Lee is two people and @Nobody Here is unknown." in msg, msg
    searches = [r for r in mattermost.state()["requests"] if r["path"] == "/api/v4/users/search"]
    assert len(searches) == 3  # Alice Example, Ann Lee, Nobody Here
