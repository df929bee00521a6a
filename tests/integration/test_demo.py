"""`make demo` as a test: scripts/demo.sh runs the whole flow (Dovecot, SMTP
sink, daemon, local feed, digest, reply by email) against the binary under
test and must finish cleanly, showing what a person watching it would
expect to see."""
import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
MAILFEED = os.environ.get("MAILFEED_BIN", "/work/main/build/asan/mailfeed")


def test_demo_runs_the_whole_flow():
    env = dict(os.environ, MAILFEED_DEMO_BIN=MAILFEED)
    r = subprocess.run([str(ROOT / "scripts" / "demo.sh")], env=env, capture_output=True,
                       text=True, timeout=180)
    out = r.stdout
    assert r.returncode == 0, out[-3000:] + r.stderr[-3000:]
    for n in range(1, 8):
        assert re.search(r"^== %d\. " % n, out, re.M), "section %d missing" % n

    # the post, in the fundraising feed, with its tag from the body
    feed = out[out.index("== 4. "):out.index("$ mailfeed dead list")]
    assert "Autumn appeal" in feed
    assert "campaign" in feed
    # the Outlook reply became a comment without the quoted history
    assert "Leeds food bank" in feed
    assert "Sent: Monday, November 23, 2026" not in feed
    # the out-of-office never reached a feed; the dead list says why
    assert "out of the office" not in feed
    dead = out[out.index("$ mailfeed dead list"):out.index("== 5. ")]
    assert "Automatic reply" in dead or "ooo.7c1e0b@mail.example.org" in dead

    # the digest reached the sink, with the reply link of the post
    digest = out[out.index("== 5. "):out.index("== 6. ")]
    assert "Subject: " in digest and "List-Unsubscribe: <mailto:feed+" in digest
    assert re.search(r"Reply by email: mailto:feed\+\S+@example\.org\?subject=Re", digest)

    # the reply became a comment, without the quoted digest
    after = out[out.index("The fundraising feed now:"):out.index("== 7. ")]
    assert "five largest donors" in after
    assert " wrote:" not in after[after.index("five largest donors"):]
    assert "SIGTERM -> exit 0" in out
