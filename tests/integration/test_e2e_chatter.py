"""End to end: a real Dovecot, the real daemon (`mailfeed run`) and the
Chatter double, with crashes, an expiring token and an outage on the way.

300 messages in three folders mapped to three Chatter groups are generated
here with Python's email package: threads linked by Message-ID, In-Reply-To
and References, replies stored before the message they answer (in the same
batch of new mail, and alone in an earlier one), hashtags in subjects and
texts (and things that are not hashtags), attachments, and auto-replies that
must not be posted.  From what was generated the test derives exactly which
posts each group must show, which comments under which post and in which
order, their hashtags, files and authors (post_as = author: the double knows
some senders as Salesforce users; the others are posted by the integration
user with a "From NAME <address>" line), and compares the double's state with
it after the daemon was killed with SIGKILL ten times at random moments.
Posts and comments carry only what a person wrote; every generated message
has a sentence of its own, by which the test tells which message an element
carries, so a duplicate would show as a message seen twice."""
import hashlib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import format_datetime

from conftest import (PgConnection, daemon_log, start_daemon, state_db, stop_daemon, wait_for,
                      write_config)

HERE = os.path.dirname(os.path.abspath(__file__))
DOUBLE = os.path.join(HERE, "doubles", "chatter_double.py")

INTEGRATION_ID = "005XX0000000001AAA"
FOLDERS = {  # folder -> (mailbox name, group id, hashtags of the mapping)
    "Fundraising": ("fundraising", "0F9XX0000000001AAA", ["fundraising"]),
    "Board": ("board", "0F9XX0000000002AAA", []),
    "Events": ("events", "0F9XX0000000003AAA", []),
}
# (name, email, Salesforce user: None, or (IsActive, pre-authorized for the app))
PEOPLE = [
    ("Alice Example", "alice@example.org", (True, True)),
    ("Bob Board", "bob@example.org", (True, True)),
    ("Chen Wei", "chen.wei@example.org", (True, True)),
    ("Dora Ortiz", "dora@example.org", (True, True)),
    ("Erik Unapproved", "erik@example.org", (True, False)),
    ("Fay Former", "fay@example.org", (False, True)),
    ("Gus Guest", "gus@partner.example", None),
    ("Hana Volunteer", "hana@volunteers.example", None),
    ("Ivo Donor", "ivo@donors.example", None),
]
TAGS = ["Budget", "Q3", "volunteers", "gala", "grants", "board-meeting", "outreach"]
WAVES = 8
PER_FOLDER = 100
CONCURRENCY = 4  # [feed] concurrency
KILLS = 10  # SIGKILLs: one after each wave but the token one, the rest at the end
TOKEN_WAVE = 3
OUTAGE_WAVE = 5


def user_id(i):
    return "005XX%013d" % (100 + i)


def posts_as(email):
    """The Salesforce user id an item from email must be posted as."""
    for i, (_n, e, u) in enumerate(PEOPLE):
        if e == email and u and u[0] and u[1]:
            return user_id(i)
    return INTEGRATION_ID


def item_key(group, message_id):
    return "mf-" + hashlib.sha256((group + "\n" + message_id).encode()).hexdigest()[:32]


class Msg:
    def __init__(self, folder, thread, n, date, who, subject, wave):
        self.folder, self.thread, self.n, self.date = folder, thread, n, date
        self.name, self.email = who
        self.subject, self.wave = subject, wave
        self.mid = "t%d.m%d.%s@e2e.example.org" % (thread.n, n, folder.lower())
        self.key = item_key(FOLDERS[folder][1], self.mid)
        self.text_tags, self.files = [], []
        self.auto = None  # how an auto-reply gives itself away
        self.parent = None
        self.sentence = "Unique sentence %s %d-%d." % (folder, thread.n, n)

    def hashtags(self):
        """The tags the post or comment must carry, in order: the mapping's,
        the subject's [Tag] prefixes, the #tags of the new text."""
        out = []
        subject_tags = []
        s = self.subject
        while True:
            if s.startswith("Re: "):
                s = s[4:]
            elif s.startswith("["):
                subject_tags.append(s[1:s.index("]")])
                s = s[s.index("]") + 1:].lstrip()
            else:
                break
        for t in FOLDERS[self.folder][2] + subject_tags + self.text_tags:
            if t.lower() not in (x.lower() for x in out):
                out.append(t)
        return out

    def raw(self):
        m = EmailMessage()
        m["From"] = "%s <%s>" % (self.name, self.email)
        m["To"] = "%s@example.org" % self.folder.lower()
        m["Subject"] = self.subject
        m["Date"] = format_datetime(self.date)
        m["Message-ID"] = "<%s>" % self.mid
        # the receiving server vouches for the sender: only then may the
        # gateway act as them (post_as = author)
        m["Authentication-Results"] = "mx.e2e.example; dmarc=pass header.from=%s" % \
            self.email.split("@")[1]
        if self.auto == "header":
            m["Auto-Submitted"] = "auto-replied"
        if self.parent:
            m["In-Reply-To"] = "<%s>" % self.parent.mid
            refs, p = [], self.parent
            while p:
                refs.insert(0, "<%s>" % p.mid)
                p = p.parent
            m["References"] = " ".join(refs)
        lines = [self.sentence]
        if self.text_tags:
            lines.append("Filed under " + " ".join("#" + t for t in self.text_tags) + ".")
        # none of these is a hashtag: a URL fragment, a colour, a number
        lines.append("Details: https://example.org/plan#section-%d, colour #fff, item #%d."
                     % (self.n, 1000 + self.n))
        text = "\n".join(lines) + "\n"
        if self.parent:
            text += ("\nOn %s, %s <%s> wrote:\n> Quoted text %s #quotedtag\n> more quote\n"
                     % (format_datetime(self.parent.date), self.parent.name,
                        self.parent.email, self.parent.sentence))
        text += "\n-- \n%s\nExample Org\n" % self.name
        m.set_content(text)
        for fname, ctype, data in self.files:
            main, sub = ctype.split("/")
            m.add_attachment(data, maintype=main, subtype=sub, filename=fname)
        return m.as_bytes()


class Thread:
    def __init__(self, n, folder):
        self.n, self.folder = n, folder
        self.msgs = []
        self.held = False  # its root waits for the next wave

    def post(self):
        """The message that becomes the post: the first one processed."""
        real = [m for m in self.msgs if not m.auto]
        return min(real, key=lambda m: (m.wave, m.date))


def generate(rng):
    """waves: [[Msg in storing order]]; threads: [Thread]."""
    clock = [datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=3)]

    def tick():
        clock[0] += timedelta(minutes=7)
        return clock[0]

    threads, waves = [], [[] for _ in range(WAVES)]
    counts = {f: 0 for f in FOLDERS}
    attach_left = {"post": 7, "comment": 2}
    auto_left = 9
    late_roots = []  # (wave, Msg): roots stored one wave after their reply
    for w in range(WAVES):
        for folder in FOLDERS:
            quota = PER_FOLDER // WAVES + (1 if w < PER_FOLDER % WAVES else 0)
            out = waves[w]
            start = len(out)
            for m in [m for (lw, m) in late_roots if lw == w and m.folder == folder]:
                out.append(m)
                m.thread.held = False
                quota -= 1
            open_threads = [t for t in threads if t.folder == folder and not t.held]
            late_here = False
            while quota > 0:
                r = rng.random()
                if (r < 0.35 or not open_threads) or quota == 1 and r < 0.5:
                    # a new thread
                    t = Thread(len(threads) + 1, folder)
                    threads.append(t)
                    subject = ("[%s] " % rng.choice(TAGS) if rng.random() < 0.4 else "") + \
                        "Topic %d of %s" % (t.n, folder)
                    root = Msg(folder, t, 0, tick(), rng.choice(PEOPLE)[:2], subject, w)
                    if rng.random() < 0.5:
                        root.text_tags = rng.sample(TAGS, rng.randint(1, 2))
                    if attach_left["post"] and rng.random() < 0.25:
                        attach_left["post"] -= 1
                        root.files.append(("plan-%d.pdf" % t.n, "application/pdf",
                                           b"%PDF-1.4\n" + rng.randbytes(rng.randint(500, 6000))))
                        if rng.random() < 0.5:
                            root.files.append(("notes-%d.txt" % t.n, "text/plain",
                                               ("notes for topic %d\n" % t.n).encode()))
                    t.msgs.append(root)
                    kind = rng.random()
                    if quota >= 2 and kind < 0.15 and w + 1 < WAVES and not late_here:
                        # the reply comes alone; its root only with the next wave
                        reply = reply_to(rng, t, root, tick(), w)
                        out.append(reply)
                        root.wave = w + 1
                        late_roots.append((w + 1, root))
                        t.held = late_here = True
                        quota -= 1
                        continue
                    if quota >= 2 and kind < 0.35:
                        # the reply is stored before its root, in the same batch
                        reply = reply_to(rng, t, root, tick(), w)
                        out.extend([reply, root])
                        quota -= 2
                        open_threads.append(t)
                        continue
                    out.append(root)
                    open_threads.append(t)
                    quota -= 1
                    continue
                t = rng.choice(open_threads)
                last = t.msgs[-1] if not t.msgs[-1].auto else t.msgs[0]
                if auto_left and rng.random() < 0.12:
                    auto_left -= 1
                    a = Msg(folder, t, len(t.msgs), tick(), rng.choice(PEOPLE)[:2],
                            rng.choice(["Automatic reply: ", "Out of Office: "]) + last.subject,
                            w)
                    a.parent = last
                    a.auto = "header" if a.subject.startswith("Automatic") else "subject"
                    if rng.random() < 0.5:
                        a.auto = "header"
                    t.msgs.append(a)
                    out.append(a)
                else:
                    reply = reply_to(rng, t, last, tick(), w)
                    if attach_left["comment"] and rng.random() < 0.1:
                        attach_left["comment"] -= 1
                        reply.files.append(("minutes-%d.txt" % t.n, "text/plain",
                                            b"minutes\n" * rng.randint(1, 50)))
                    out.append(reply)
                quota -= 1
            counts[folder] += len(out) - start
    assert all(c == PER_FOLDER for c in counts.values()), counts
    return waves, threads


def reply_to(rng, t, parent, date, wave):
    m = Msg(t.folder, t, len(t.msgs), date, rng.choice(PEOPLE)[:2],
            "Re: " + t.msgs[0].subject.replace("Re: ", ""), wave)
    m.parent = parent
    if rng.random() < 0.3:
        m.text_tags = [rng.choice(TAGS)]
    t.msgs.append(m)
    return m


# ------------------------------------------------------------------ double

class Double:
    def __init__(self, tmp_path):
        self.key = tmp_path / "key.pem"
        pub = tmp_path / "pub.pem"
        subprocess.run(["/usr/bin/openssl", "genrsa", "-out", str(self.key), "2048"],
                       check=True, capture_output=True)
        os.chmod(self.key, 0o600)
        subprocess.run(["/usr/bin/openssl", "rsa", "-in", str(self.key), "-pubout", "-out",
                        str(pub)], check=True, capture_output=True)
        self.proc = subprocess.Popen(["/usr/bin/python3", DOUBLE, "--public-key", str(pub)],
                                     stdout=subprocess.PIPE, text=True)
        self.base = "http://127.0.0.1:%d" % int(self.proc.stdout.readline())

    def control(self, **c):
        req = urllib.request.Request(self.base + "/__control", data=json.dumps(c).encode(),
                                     method="POST")
        urllib.request.urlopen(req, timeout=10).read()

    def state(self):
        return json.loads(urllib.request.urlopen(self.base + "/__state", timeout=30).read())

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.proc.stdout.close()


OWN_WORDS = re.compile(r"Unique sentence (\w+) (\d+)-(\d+)\.|Text of (\S+@e2e\.example\.org)\.")


def marker(el):
    """The key of the message whose words el carries."""
    m = OWN_WORDS.search(el["body"]["text"])
    assert m, el["body"]["text"][:300]
    if m.group(4):
        return item_key(FOLDERS["Board"][1], m.group(4))
    folder = m.group(1)
    mid = "t%s.m%s.%s@e2e.example.org" % (m.group(2), m.group(3), folder.lower())
    return item_key(FOLDERS[folder][1], mid)


def segments(el):
    return el["_input"]["body"]["messageSegments"]


def count(state_path, sql):
    """sql's single number on the state (SQLite file or PostgreSQL DSN), or
    -1 while the state or its schema is not there yet, or is busy."""
    is_dsn = state_path.startswith(("postgresql://", "postgres://"))
    if not is_dsn and not os.path.exists(state_path):
        return -1
    try:
        con = PgConnection(state_path) if is_dsn else sqlite3.connect(state_path, timeout=10)
    except Exception:
        return -1  # the database is being restarted
    try:
        return con.execute(sql).fetchone()[0]
    except Exception:
        return -1  # schema not there yet, or busy
    finally:
        con.close()


def test_300_messages_with_kills_token_expiry_and_outage(dovecot, tmp_path):
    rng = random.Random(int(os.environ.get("E2E_SEED", "20261123")))
    waves, threads = generate(rng)
    msgs = [m for w in waves for m in w]
    assert len(msgs) == 3 * PER_FOLDER
    autos = [m for m in msgs if m.auto]
    assert 5 <= len(autos) <= 9
    late = [t for t in threads if t.post() is not t.msgs[0]]
    assert late, "no reply stored alone before its root"

    double = Double(tmp_path)
    try:
        double.control(groups={g: f for f, (_mb, g, _t) in FOLDERS.items()},
                       users=[{"Id": user_id(i), "Username": e.replace("@", "@acme."),
                               "Email": e, "Name": n, "IsActive": u[0], "authorized": u[1]}
                              for i, (n, e, u) in enumerate(PEOPLE) if u])
        for folder in FOLDERS:
            dovecot.create_folder("alice", folder)
        sections = {}
        for folder, (mb, group, tags) in FOLDERS.items():
            sec = {"account": "alice", "folder": folder, "group": group, "after": "seen",
                   "start": "all"}
            if tags:
                sec["hashtags"] = ", ".join(tags)
            sections["mailbox " + mb] = sec
        cfg = write_config(tmp_path, dovecot, mailbox=None,
                           gateway={"trusted_authserv": "mx.e2e.example"}, feed={
            "backend": "chatter", "instance_url": double.base, "login_url": double.base,
            "client_id": "3MVG9TESTCLIENT", "private_key_file": str(double.key),
            "username": "integration@acme.example", "post_as": "author",
            "concurrency": CONCURRENCY, "max_retry_delay": "2s"}, **sections)

        daemons = [start_daemon(cfg.path)]
        base_date = int(time.time()) - 10 * 86400

        def kill_and_restart():
            daemons[-1].send_signal(signal.SIGKILL)
            daemons[-1].wait(10)
            daemons.append(start_daemon(cfg.path))

        def delivered():
            return count(cfg.state, "SELECT COUNT(*) FROM outbox WHERE state='delivered'")

        def taken_in(n):
            return count(cfg.state, "SELECT COUNT(*) FROM messages") == n and \
                count(cfg.state, "SELECT COUNT(*) FROM messages WHERE state='new'") == 0

        stored = 0
        for w, wave in enumerate(waves):
            if w == TOKEN_WAVE:
                # the daemon holds its tokens: everything so far is delivered
                items = count(cfg.state, "SELECT COUNT(*) FROM outbox")
                assert wait_for(lambda: delivered() == items, 30)
            if w == OUTAGE_WAVE:
                # the service goes down for a while, asking for a second's patience
                # (long enough to span the restart below and the wave's delivery)
                double.control(down_for=8, retry_after=1)
            for folder in FOLDERS:
                part = [m.raw() for m in wave if m.folder == folder]
                # INTERNALDATEs increase from wave to wave, like mail arriving over time
                dovecot.bulk_import("alice", folder, part, internaldate=base_date + w * 1000)
            stored += len(wave)
            if w == TOKEN_WAVE:
                # every token dies while the daemon works: it must log in again
                issued = len(double.state()["tokens_issued"])
                double.control(expire_tokens=True)
            elif w in (1, 4, 6):
                # in the middle of a delivery: items are marked as being sent
                wait_for(lambda: count(cfg.state, "SELECT COUNT(*) FROM outbox"
                                                  " WHERE state='inflight'") > 0, 5, step=0.01)
                kill_and_restart()
            else:
                time.sleep(rng.uniform(0.0, 0.8))
                kill_and_restart()
            # the wave is taken in and converted before the next one arrives, so
            # that "stored in the same batch" and "stored alone first" hold
            t_wave = time.monotonic()
            assert wait_for(lambda: taken_in(stored), 90), \
                "wave %d not taken in:\n%s" % (w, daemon_log(daemons[-1])[-3000:])
            print("wave %d taken in after %.1f s" % (w, time.monotonic() - t_wave))
            if w == TOKEN_WAVE:
                assert wait_for(lambda: "chatter.session_expired" in daemon_log(daemons[-1]),
                                30), daemon_log(daemons[-1])[-3000:]
                log = daemon_log(daemons[-1])
                assert "chatter.auth " in log[log.index("chatter.session_expired"):]
                assert len(double.state()["tokens_issued"]) > issued

        # more crashes while the last items are delivered
        n_items = len(msgs) - len(autos)
        for _ in range(KILLS + 1 - len(daemons)):
            time.sleep(rng.uniform(0.05, 0.4))
            kill_and_restart()

        assert wait_for(lambda: delivered() == n_items, 90), \
            "delivered %d of %d:\n%s" % (delivered(), n_items, daemon_log(daemons[-1])[-3000:])
        # every message is acknowledged (after = seen) once it is safe
        assert wait_for(lambda: all("\\Seen" in f for folder in FOLDERS
                                    for (_u, f, _r) in dovecot.messages("alice", folder)), 30)
        stop_daemon(daemons[-1])
        assert len(daemons) == KILLS + 1
        logs = "".join(daemon_log(p) for p in daemons)
        assert "AddressSanitizer" not in logs and "runtime error" not in logs
        # the outage was seen and waited out; items caught by a crash while
        # being sent were looked up at the service
        assert "SERVER_UNAVAILABLE" in logs and "outbox.retrying" in logs
        assert "outbox.reconciled" in logs

        con = state_db(cfg)
        states = {r[0]: r[1] for r in
                  con.execute("SELECT state, COUNT(*) FROM messages GROUP BY state").fetchall()}
        skipped = [r[0] for r in con.execute("SELECT reason FROM messages WHERE state='skipped'")]
        con.close()
        assert states == {"delivered": n_items, "skipped": len(autos)}, states
        assert all(r.startswith("auto-reply:") for r in skipped), skipped

        check_double(double.state(), msgs, threads)
    finally:
        double.stop()


def check_double(st, msgs, threads):
    by_key = {m.key: m for m in msgs}
    posts, comments = st["posts"], st["comments"]
    post_keys = [marker(p) for p in posts]
    comment_keys = [marker(c) for c in comments]
    # nothing twice
    assert len(post_keys) == len(set(post_keys)), "duplicate posts"
    assert len(comment_keys) == len(set(comment_keys)), "duplicate comments"
    # nothing lost, nothing skipped posted: exactly the expected posts per group
    for folder, (_mb, group, _t) in FOLDERS.items():
        want = {t.post().key for t in threads if t.folder == folder}
        got = {marker(p) for p in posts if p["parent"]["id"] == group}
        assert got == want, (folder, len(got), len(want))
    assert len(posts) == len(threads)
    # comments: under the right post, in date order
    post_of = {marker(p): p["id"] for p in posts}
    for t in threads:
        post = t.post()
        want = [m.key for m in sorted((m for m in t.msgs if not m.auto and m is not post),
                                      key=lambda m: m.date)]
        got = [marker(c) for c in comments if c["feedElement"]["id"] == post_of[post.key]]
        assert got == want, "thread %d: comments %s, expected %s" % (t.n, got, want)
    assert len(comments) == sum(1 for m in msgs if not m.auto) - len(threads)
    assert not any(m.key in post_keys + comment_keys for m in msgs if m.auto)

    files = {f["id"]: f for f in st["files"]}
    # every file attached once, even when a crash came between the upload
    # and the post.  A kill while an upload is under way (the service took
    # it, the answer never arrived) can leave that one file unattached at
    # the service, never a second copy on a post: at most one per request
    # in flight per kill
    attached = [i["id"] for p in posts for i in p["capabilities"]["files"]["items"]] + \
        [c["capabilities"]["content"]["id"] for c in comments if c["capabilities"].get("content")]
    assert len(attached) == len(set(attached)), "a file attached twice"
    assert set(attached) <= set(files)
    assert len(files) - len(attached) <= KILLS * CONCURRENCY, (len(files), len(attached))
    for is_post, el in [(True, p) for p in posts] + [(False, c) for c in comments]:
        m = by_key[marker(el)]
        text = el["body"]["text"]
        # author: the sender's own user, or the integration user naming the sender
        actor = el["actor"] if "actor" in el else el["user"]
        assert actor["id"] == posts_as(m.email), (m.email, actor)
        if actor["id"] == INTEGRATION_ID:
            assert "From %s <%s>" % (m.name, m.email) in text
        else:
            assert "From " not in text
        tags = [s["tag"] for s in segments(el) if s["type"] == "Hashtag"]
        assert tags == m.hashtags(), (m.subject, m.text_tags, tags)
        # the new text is there; the quoted history and the signature are not
        assert m.sentence in text
        assert "Quoted text" not in text and "Example Org" not in text
        assert {"type": "Link", "url": "https://example.org/plan#section-%d" % m.n} \
            in segments(el)
        if is_post:
            assert m.subject in text
            ids = [f["id"] for f in el["capabilities"]["files"]["items"]]
        else:
            content = el["capabilities"].get("content")
            ids = [content["id"]] if content else []
        # a comment takes one file; the others are named in its text
        up = m.files if is_post else m.files[:1]
        got = sorted((files[i]["title"], files[i]["sha256"]) for i in ids)
        want = sorted((n, hashlib.sha256(d).hexdigest()) for (n, _c, d) in up)
        assert got == want, (m.subject, got, want)
        for (n, _c, d) in m.files[len(up):]:
            assert "[attachment %s (%d bytes) not uploaded: too many files]" % (n, len(d)) \
                in text


def simple(mid, subject, parent=None, attachment=None):
    m = EmailMessage()
    m["From"] = "Gus Guest <gus@partner.example>"
    m["To"] = "board@example.org"
    m["Subject"] = subject
    m["Date"] = format_datetime(datetime.now(timezone.utc))
    m["Message-ID"] = "<%s>" % mid
    if parent:
        m["In-Reply-To"] = m["References"] = "<%s>" % parent
    m.set_content("Text of %s.\n" % mid)
    if attachment:
        m.add_attachment(attachment, maintype="application", subtype="pdf",
                         filename="agenda.pdf")
    return m.as_bytes()


def test_lost_answers_and_failed_posts_make_nothing_twice(dovecot, tmp_path):
    # The service takes a post (then a comment), but its answer is lost (the
    # connection breaks): the retry must find it, not make a second one.
    # Then a file is uploaded but the post that attaches it fails: the retry
    # attaches that file rather than uploading it again.
    group = FOLDERS["Board"][1]
    double = Double(tmp_path)
    try:
        dovecot.create_folder("alice", "Board")
        cfg = write_config(tmp_path, dovecot, folder="Board", group=group, feed={
            "backend": "chatter", "instance_url": double.base, "login_url": double.base,
            "client_id": "3MVG9TESTCLIENT", "private_key_file": str(double.key),
            "username": "integration@acme.example", "max_retry_delay": "1s"})
        p = start_daemon(cfg.path)
        mids = ["lost.%d@e2e.example.org" % i for i in range(1, 5)]
        keys = [item_key(group, m) for m in mids]

        def at_double():
            st = double.state()
            return [marker(x) for x in st["posts"]], [marker(x) for x in st["comments"]]

        def delivered(n):
            return wait_for(lambda: count(cfg.state, "SELECT COUNT(*) FROM outbox"
                                                     " WHERE state='delivered'") == n, 30)

        dovecot.append("alice", "Board", simple(mids[0], "Lost answers"))
        assert delivered(1), daemon_log(p)[-3000:]
        double.control(lose_answer=1)  # the next call: the second post
        dovecot.append("alice", "Board", simple(mids[1], "Second thread"))
        assert delivered(2), daemon_log(p)[-3000:]
        double.control(lose_answer=1)  # and a comment on it
        dovecot.append("alice", "Board", simple(mids[2], "Re: Second thread", mids[1]))
        assert delivered(3), daemon_log(p)[-3000:]
        # data calls: the upload goes through, the post answers 503
        double.control(skip=1, fail_next=[503])
        pdf = b"%PDF-1.4\n" + os.urandom(3000)
        dovecot.append("alice", "Board", simple(mids[3], "Agenda", attachment=pdf))
        assert delivered(4), daemon_log(p)[-3000:]
        assert wait_for(lambda: all("\\Seen" in f for (_u, f, _r)
                                    in dovecot.messages("alice", "Board")), 30)
        log = stop_daemon(p)
        posts, comments = at_double()
        assert posts == [keys[0], keys[1], keys[3]] and comments == [keys[2]]
        for k in keys[1:3]:
            assert "outbox.reconciled key=%s found=yes" % k in log
        assert "SERVER_UNAVAILABLE" in log
        st = double.state()
        assert [(f["title"], f["sha256"]) for f in st["files"]] == \
            [("agenda.pdf", hashlib.sha256(pdf).hexdigest())]
        assert st["posts"][2]["capabilities"]["files"]["items"] == \
            [{"id": st["files"][0]["id"], "title": "agenda.pdf", "contentSize": len(pdf)}]
        assert st["comments"][0]["feedElement"]["id"] == st["posts"][1]["id"]
        con = state_db(cfg)
        rows = [tuple(r) for r in
                con.execute("SELECT key, state, remote_id FROM outbox ORDER BY id").fetchall()]
        con.close()
        assert rows == [(keys[0], "delivered", st["posts"][0]["id"]),
                        (keys[1], "delivered", st["posts"][1]["id"]),
                        (keys[2], "delivered", st["comments"][0]["id"]),
                        (keys[3], "delivered", st["posts"][2]["id"])]
    finally:
        double.stop()
