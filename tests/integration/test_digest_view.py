"""Digests as people read them: short entries, the real author of what the
gateway posted, comments under their post's title, times in the reader's
zone, and a layout that reads on a phone.  Every variant is rendered in a
real browser (Debian's headless Chromium) at 375 and 1024 pixels: no
horizontal scrolling and nothing beyond the right edge.  The screenshots are
kept under build/screenshots/ for people to look at."""
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time

import pytest

from test_digest import MAILFEED, Sink, add_item, db, make_config, mf, parts, prepare

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHOTS = os.path.join(ROOT, "build", "screenshots")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(not os.access(MAILFEED, os.X_OK),
                                reason="mailfeed binary not built")

# Appended to a copy of the mail's HTML: what overflows the page's width,
# written into the page so that --dump-dom brings it back.  Headless
# Chromium keeps its window at least 500 pixels wide, so a phone's width is
# given to the page itself (the root element), which is what the layout of a
# mail without media queries depends on.
CHECK = """
<script>
window.addEventListener('load', function () {
  var w = document.documentElement.getBoundingClientRect().width, bad = [];
  if (document.documentElement.scrollWidth > Math.max(w, window.innerWidth) + 1 ||
      document.body.scrollWidth > w + 1)
    bad.push('page ' + document.body.scrollWidth + ' > ' + w);
  document.querySelectorAll('body *').forEach(function (el) {
    var r = el.getBoundingClientRect();
    if (r.width > 0 && (r.right > w + 1 || r.left < -1))
      bad.push(el.tagName + ' ' + Math.round(r.left) + '..' + Math.round(r.right));
  });
  var d = document.createElement('pre');
  d.textContent = 'LAYOUT:' + JSON.stringify({width: w, bad: bad}) + ':END';
  document.body.appendChild(d);
});
</script>
"""


def chromium(*args):
    with tempfile.TemporaryDirectory() as prof:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--hide-scrollbars",
             "--user-data-dir=" + prof, *args],
            capture_output=True, text=True, timeout=120)


def check_layout(html, name, tmp_path):
    """Renders html at a phone's and a desk's width; returns the screenshots."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("chromium is not installed")
    os.makedirs(SHOTS, exist_ok=True)
    page = tmp_path / (name + ".html")
    probe = tmp_path / (name + "-check.html")
    shots = []
    for width in (375, 1024):
        sized = "<style>html{width:%dpx !important}</style></head>" % width
        probe.write_text(html.replace("</head>", sized, 1).replace("</body>", CHECK + "</body>"))
        page.write_text(html.replace("</head>", sized, 1))
        r = chromium("--window-size=%d,1400" % max(width, 500), "--virtual-time-budget=3000",
                     "--dump-dom", "file://" + str(probe))
        m = re.search(r"<pre>LAYOUT:(.*?):END</pre>", r.stdout)
        assert m, (r.returncode, r.stderr[-2000:])
        res = json.loads(m.group(1).replace("&gt;", ">").replace("&lt;", "<")
                         .replace("&amp;", "&"))
        assert abs(res["width"] - width) <= 1, res
        assert res["bad"] == [], (name, width, res["bad"][:10])
        shot = os.path.join(SHOTS, "%s-%d.png" % (name, width))
        r = chromium("--window-size=%d,1400" % max(width, 500), "--screenshot=" + shot,
                     "file://" + str(page))
        assert os.path.getsize(shot) > 1000, r.stderr[-2000:]
        shots.append(shot)
    return shots


def delivered_post(cfg, remote_id, name, email, subject, kind="post"):
    """An outbox row as the gateway leaves it after posting a mail."""
    con = db(cfg)
    payload = {"author": {"name": name, "email": email, "verified": True},
               "subject": subject, "text": "", "hashtags": []}
    item = con.execute("INSERT INTO outbox(key, kind, grp, state, remote_id, created,"
                       " delivered_at) VALUES(?,?,?,?,?,?,?) RETURNING id",
                       ("k-" + remote_id, kind, "team-group", "delivered", remote_id,
                        int(time.time()) - 3600, int(time.time()) - 3600)).fetchone()[0]
    con.execute("INSERT INTO outbox_payloads(item, payload) VALUES(?,?)",
                (item, json.dumps(payload)))
    con.commit()
    con.close()


LONG = ("The board met on Tuesday and went through the third-quarter appeal line by "
        "line. " * 12)
URL = "https://intranet.example.org/" + "very-long-path-segment/" * 12 + "report.pdf"


def test_digest_reads_short_and_fits_a_phone(tmp_path):
    sink = Sink(tmp_path)
    try:
        cfg = make_config(tmp_path, sink.port, subscriber=None, extra="""
[subscriber bob@example.org]
groups = team
frequency = daily
timezone = Asia/Tokyo
""")
        prepare(cfg)
        now = int(time.time())
        # a long post: an excerpt of a few lines, cut at a word
        add_item(cfg, "long", LONG + "\n\nThe last line nobody reads in a digest.",
                 subject="Q3 appeal: the board's notes", created=now - 50)
        # a post the gateway made from a mail, as the integration user
        p = add_item(cfg, "mailed", "From Alice Example <alice@example.org>\n"
                     "Gala budget\nThe caterer needs the numbers by Friday. " + URL,
                     subject=None, author=("Feed Integration", "integration@example.org"),
                     created=now - 40)
        delivered_post(cfg, "local-%d" % p, "Alice Example", "alice@example.org",
                       "Gala budget")
        # twelve new comments on it
        for i in range(12):
            add_item(cfg, "c%d" % i, "Comment number %d." % (i + 1), parent=p,
                     author=("Carl", "carl@example.org"), created=now - 30 + i)
        # new comments on an older post (from before this digest's period)
        old = add_item(cfg, "old", "An old post.", subject="Spring fair",
                       author=("Feed Integration", "integration@example.org"),
                       created=now - 30 * 86400)
        delivered_post(cfg, "local-%d" % old, "Dora", "dora@example.org", "Spring fair")
        add_item(cfg, "late", "Still on for April? " + "x" * 300, parent=old,
                 author=("Erin", "erin@example.org"), created=now - 10)
        r = mf(cfg, "digest", "--now")
        assert r.returncode == 0, r.stderr
        msgs = sink.messages()
        assert len(msgs) == 1
        _meta, m, raw = msgs[0]
        text, html = parts(m)

        # entries are short
        assert "The board met on Tuesday" in text
        assert "The last line nobody reads" not in text and "\u2026" in text
        assert len(html.encode()) < 20000, len(html.encode())
        # many comments summarised, the latest shown
        assert "12 new comments, the latest 2 shown" in text
        assert "Comment number 12." in text and "Comment number 11." in text
        assert "Comment number 3." not in text
        # the person behind the gateway's post, and its subject as the title
        assert "* Gala budget" in text and "Alice Example" in text
        assert "From Alice Example <alice@example.org>" not in text
        assert "Feed Integration" not in text
        # comments on an older post come under its title
        assert "* Spring fair" in text and "Still on for April?" in text
        # times in the reader's zone
        assert "Times are in Asia/Tokyo." in text
        when = time.strftime("%H:%M", time.gmtime(now - 10 + 9 * 3600))
        assert when in text
        # what the mail client needs
        assert 'name="viewport"' in html
        assert m["Reply-To"] is None  # several threads: no single reply address

        shots = check_layout(html, "digest-daily", tmp_path)
        assert len(shots) == 2
    finally:
        sink.stop()


def test_notification_threads_and_fits_a_phone(tmp_path):
    sink = Sink(tmp_path)
    try:
        cfg = make_config(tmp_path, sink.port, subscriber="each")
        prepare(cfg)
        p = add_item(cfg, "n1", LONG + "\n\nEvery word of it. " + URL, subject="Board notes")
        r = mf(cfg, "digest", "--now")
        assert r.returncode == 0, r.stderr
        msgs = sink.messages()
        assert len(msgs) == 1
        _meta, m, _raw = msgs[0]
        text, html = parts(m)
        # a notification carries the whole post
        assert "Every word of it." in text
        # its Message-ID comes from the post: every mail about it threads
        assert re.fullmatch(r"<post\.[0-9a-f]{32}\.[0-9a-f]{12}@example\.org>", m["Message-ID"])
        assert m["Reply-To"].startswith("feed+")
        # a later digest of that one thread answers the notification
        con = db(cfg)
        con.execute("UPDATE subscribers SET frequency='daily', last_sent=NULL, since=?",
                    (int(time.time()) - 60,))
        con.commit()
        con.close()
        add_item(cfg, "n2", "A comment on it.", parent=p, author=("Carl", "carl@example.org"))
        r = mf(cfg, "digest", "--now")
        assert r.returncode == 0, r.stderr
        later = sink.messages()[-1][1]
        assert later["In-Reply-To"] == m["Message-ID"]
        assert later["References"] == m["Message-ID"]
        assert later["Reply-To"] == m["Reply-To"] or later["Reply-To"].startswith("feed+")
        check_layout(html, "notification", tmp_path)
        check_layout(parts(later)[1], "digest-one-thread", tmp_path)
    finally:
        sink.stop()
