#!/usr/bin/python3
"""demo.py — the whole mailfeed flow on loopback, shown to a person.

Started by scripts/demo.sh (`make demo`) and by tests/integration/test_demo.py.
It starts a throwaway Dovecot (IMAPS) and an SMTP sink (STARTTLS), both
trusting a CA made on the spot, through the integration-test harness
(tests/integration/harness/); writes a config for the local feed; loads the
threads in scripts/demo/ into two mapped folders; runs the daemon; shows the
status, the group feeds and the dead list; sends a digest to a subscriber and
answers one of its items by email; then stops everything and removes the
temporary directory, also on failure or Ctrl-C.

Exit status: 0 when every step worked, 1 when one failed (the message names
the step), 130 when interrupted.  Needs Debian's /usr/bin/python3 (aiosmtpd).
"""
import email
import email.policy
import email.utils
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "scripts" / "demo"
sys.path.insert(0, str(ROOT / "tests" / "integration"))

REPLY_ADDRESS = "feed@example.org"
SUBSCRIBER = "alice@example.org"
REPLY_TEXT = ("I can phone the five largest donors from last autumn before the letters\n"
              "go out on 7 December. Maria, could you send me their giving history?")
REPLY_MARK = "five largest donors"

# folder -> fixtures in the order the MTA delivers them; the retention reply
# arrives before the message it answers.
MAILBOXES = [
    ("fundraising", "Fundraising", "fundraising",
     ["01-q3-appeal.eml", "02-q3-outlook-reply.eml", "03-ooo-autoreply.eml",
      "04-gala-budget-pdf.eml"]),
    ("policy", "Policy", "policy",
     ["05-policy-html-only.eml", "07-policy-retention-reply.eml",
      "06-policy-retention.eml"]),
]
NOTES = {
    "01-q3-appeal.eml": "first message, [Q3] prefix, #campaign",
    "02-q3-outlook-reply.eml": "Outlook reply with the quoted history",
    "03-ooo-autoreply.eml": "out-of-office (Auto-Submitted)",
    "04-gala-budget-pdf.eml": "PDF attachment",
    "05-policy-html-only.eml": "HTML only: a link and a list",
    "07-policy-retention-reply.eml": "reply, delivered before its parent",
    "06-policy-retention.eml": "the parent, delivered last",
}
EXPECTED = {"fundraising": 4, "policy": 3}  # messages each mapping must account for

STEP_TIMEOUT = 30  # seconds for any single wait


class StepFailed(Exception):
    """A step of the demo did not produce what it should."""


class Stopped(Exception):
    """SIGTERM or SIGHUP arrived: clean up and leave."""


def heading(title):
    print("\n== %s\n" % title, flush=True)


def show(text, indent="    "):
    for line in text.rstrip("\n").splitlines():
        print(indent + line)
    sys.stdout.flush()


def wait_for(pred, what, timeout=STEP_TIMEOUT, step=0.2):
    """Polls pred() until it returns something true; fails the step after timeout."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise StepFailed("timed out after %d s waiting for %s" % (timeout, what))
        time.sleep(step)


class Demo:
    def __init__(self, binary):
        self.bin = binary
        self.tmp = Path(tempfile.mkdtemp(prefix="mailfeed-demo-"))
        # Dovecot's mail processes run as another uid and must reach their homes.
        os.chmod(self.tmp, 0o755)
        self.conf = self.tmp / "mailfeed.conf"
        self.feeds = self.tmp / "feeds"
        self.log = self.tmp / "daemon.log"
        self.dovecot = None
        self.sink = None
        self.daemon = None
        self.step = "start"

    # ---------------------------------------------------------------- helpers

    def mf(self, *args, check=True, timeout=60):
        """Runs one mailfeed command against the demo config."""
        cmd = [self.bin, "-c", str(self.conf)] + list(args)
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise StepFailed("`mailfeed %s` did not finish within %d s" % (" ".join(args), timeout))
        if check and r.returncode != 0:
            raise StepFailed("`mailfeed %s` exited %d:\n%s" %
                             (" ".join(args), r.returncode, (r.stdout + r.stderr).strip()))
        return r

    def feed_file(self, group):
        return self.feeds / (group + ".txt")

    def feed_text(self, group):
        try:
            return self.feed_file(group).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def show_feed(self, group):
        path = self.feed_file(group)
        print("--- %s" % path.relative_to(self.tmp))
        text = self.feed_text(group)
        show(text if text else "(empty)")
        print()

    # ------------------------------------------------------------------ steps

    def servers(self):
        heading("1. Servers")
        import harness  # tests/integration/harness: Dovecot and the SMTP sink
        self.dovecot, self.sink = harness.demo_servers(self.tmp)
        print("    Dovecot IMAPS      127.0.0.1:%d   (user %s)" %
              (self.dovecot.imaps_port, self.dovecot.user))
        print("    SMTP sink STARTTLS 127.0.0.1:%d" % self.sink.port)
        print("    both trust the CA  %s" % Path(self.dovecot.ca_file).relative_to(self.tmp))
        print("    temporary dir      %s" % self.tmp)

    def config(self):
        heading("2. Configuration")
        secret = self.tmp / "secret"
        with open(os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(os.urandom(32))
        imap_pass = self.tmp / "imap.pass"
        with open(os.open(imap_pass, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(self.dovecot.password + "\n")
        smtp_auth = ""
        if getattr(self.sink, "username", None):
            smtp_pass = self.tmp / "smtp.pass"
            with open(os.open(smtp_pass, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
                f.write(self.sink.password + "\n")
            smtp_auth = "username = %s\npassword_file = %s\n" % (self.sink.username, smtp_pass)
        self.conf.write_text("""\
; mailfeed demo: everything on 127.0.0.1, posts go to the local feed.
[gateway]
state = {tmp}/state.db
reply_address = {reply}
secret_file = {tmp}/secret
log_level = info

[feed]
backend = local
dir = {feeds}

[account staff]
host = 127.0.0.1
port = {imaps}
tls = implicit
username = {user}
password_file = {tmp}/imap.pass
ca_file = {ca}

[mailbox fundraising]
account = staff
folder = Fundraising
group = fundraising
hashtags = fundraising
start = all

[mailbox policy]
account = staff
folder = Policy
group = policy
start = all

[replies]
account = staff
folder = INBOX

[smtp]
url = smtp://127.0.0.1:{smtp}
{smtp_auth}from = Feed digest <digest@example.org>
ca_file = {ca}

[digest]
hour = 7
timezone = Europe/London
""".format(tmp=self.tmp, reply=REPLY_ADDRESS, feeds=self.feeds, imaps=self.dovecot.imaps_port,
           user=self.dovecot.user, ca=self.dovecot.ca_file, smtp=self.sink.port,
           smtp_auth=smtp_auth))
        show(self.conf.read_text())
        print()
        r = self.mf("check-config")
        print("$ mailfeed check-config")
        show((r.stdout + r.stderr).strip() or "(no output, exit 0)")
        # Subscribed before the mail flows: a digest covers what is new since
        # the subscription.
        r = self.mf("subscribe", SUBSCRIBER, "--groups", "fundraising,policy", "--daily")
        print("$ mailfeed subscribe %s --groups fundraising,policy --daily" % SUBSCRIBER)
        show(r.stdout)
        time.sleep(1.1)  # feed items of this very second would count as older

    def mail(self):
        heading("3. Mail arrives")
        for _name, folder, _group, files in MAILBOXES:
            self.dovecot.create_folder(self.dovecot.user, folder)
            for fn in files:
                raw = (FIXTURES / fn).read_bytes()
                msg = email.message_from_bytes(raw, policy=email.policy.default)
                self.dovecot.append(self.dovecot.user, folder, raw)
                print("    %-12s %-28.28s %-44.44s %s" %
                      (folder, str(msg["From"]), str(msg["Subject"]), NOTES[fn]))

    def status_json(self):
        r = self.mf("status", "--json", check=False)
        if r.returncode != 0:
            return None
        try:
            return json.loads(r.stdout)
        except ValueError:
            return None

    def processed(self):
        if self.daemon.poll() is not None:
            raise StepFailed("the daemon exited with status %d" % self.daemon.returncode)
        st = self.status_json()
        if not st:
            return False
        boxes = {m.get("name"): m for m in st.get("mailboxes", [])}
        for name, n in EXPECTED.items():
            m = boxes.get(name)
            if not m or (m.get("stored") or 0) + (m.get("skipped") or 0) < n:
                return False
            if m.get("waiting"):
                return False
        ob = st.get("outbox", {})
        return not (ob.get("pending") or ob.get("retrying") or ob.get("inflight"))

    def run_daemon(self):
        heading("4. The daemon")
        logf = open(self.log, "wb")
        self.daemon = subprocess.Popen([self.bin, "-c", str(self.conf), "run"],
                                       stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
        logf.close()
        print("$ mailfeed run   (in the background, pid %d, log in %s)" %
              (self.daemon.pid, self.log.relative_to(self.tmp)))
        t0 = time.monotonic()
        wait_for(self.processed, "every message to be processed (mailfeed status --json)")
        print("    all %d messages processed in %.1f s\n" %
              (sum(EXPECTED.values()), time.monotonic() - t0))
        print("$ mailfeed status")
        show(self.mf("status").stdout)
        print("\nThe group feeds, as the local backend writes them:\n")
        for _name, _folder, group, _files in MAILBOXES:
            self.show_feed(group)
        for must in ("Autumn appeal", "Winter gala", "lobbying", "Data retention"):
            if not any(must in self.feed_text(g) for _n, _f, g, _x in MAILBOXES):
                raise StepFailed("no post about \"%s\" in the feed files" % must)
        print("$ mailfeed dead list")
        out = self.mf("dead", "list").stdout
        show(out if out.strip() else "(empty)")
        if "Automatic reply" not in out and "ooo.7c1e0b@mail.example.org" not in out:
            raise StepFailed("`mailfeed dead list` does not show the out-of-office reply")

    def sink_messages(self):
        return [m for m in self.sink.messages() if SUBSCRIBER in m[0].get("rcpt_tos", [])]

    def digest(self):
        heading("5. Digest")
        # A digest covers whole seconds up to the one before it starts, so
        # that an item of the current second comes in the next digest rather
        # than never; items delivered this very second wait for the next one.
        time.sleep(1.1)
        print("$ mailfeed digest --now --to %s" % SUBSCRIBER)
        r = self.mf("digest", "--now", "--to", SUBSCRIBER)
        show((r.stdout + r.stderr).strip() or "(exit 0)")
        _meta, msg, _raw = wait_for(self.sink_messages, "the digest at the SMTP sink")[0]
        print("\nReceived by the SMTP sink:\n")
        for h in ("From", "To", "Subject", "List-Unsubscribe"):
            print("    %s: %s" % (h, msg[h]))
        body = msg.get_body(("plain",))
        if body is None:
            raise StepFailed("the digest has no text/plain part")
        self.digest_msg = msg
        self.digest_text = body.get_content()
        print()
        show(self.digest_text)
        if "Autumn appeal" not in self.digest_text:
            raise StepFailed("the digest does not list the [Q3] Autumn appeal post")

    def reply_link(self):
        """The mailto: link of the Autumn appeal item, as (address, subject)."""
        block = None
        for part in re.split(r"(?m)^(?=\* )", self.digest_text):
            if part.startswith("* ") and "Autumn appeal" in part.splitlines()[0]:
                block = part
        m = re.search(r"Reply by email: (mailto:\S+)", block or "")
        if not m:
            raise StepFailed("no \"Reply by email\" link under the Autumn appeal item")
        link = urllib.parse.urlsplit(m.group(1))
        addr = urllib.parse.unquote(link.path)
        subject = urllib.parse.parse_qs(link.query).get("subject", ["Re: Autumn appeal"])[0]
        if not re.fullmatch(r"feed\+[A-Za-z0-9._=-]+@example\.org", addr):
            raise StepFailed("unexpected reply address %r in the digest" % addr)
        return m.group(1), addr, subject

    def reply(self):
        heading("6. Reply by email")
        link, addr, subject = self.reply_link()
        print("    reply link of the Autumn appeal item:\n      %s\n" % link)
        sent = email.utils.parsedate_to_datetime(self.digest_msg["Date"])
        quoted = "".join("> " + line + "\n" if line else ">\n"
                         for line in self.digest_text.rstrip("\n").splitlines())
        body = "%s\n\nAlice\n\nOn %s, %s wrote:\n%s" % (
            REPLY_TEXT, sent.strftime("%a, %d %b %Y at %H:%M"), self.digest_msg["From"], quoted)
        raw = (
            "Delivered-To: %s\r\n"
            "Return-Path: <%s>\r\n"
            "Message-ID: %s\r\n"
            "Date: %s\r\n"
            "From: Alice Walker <%s>\r\n"
            "To: %s\r\n"
            "Subject: %s\r\n"
            "In-Reply-To: %s\r\n"
            "References: %s\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=UTF-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n"
            "\r\n" % (addr, SUBSCRIBER, email.utils.make_msgid("reply", "example.org"),
                      email.utils.formatdate(localtime=True), SUBSCRIBER, addr, subject,
                      self.digest_msg["Message-ID"], self.digest_msg["Message-ID"])
        ).encode() + body.replace("\n", "\r\n").encode()
        print("    Alice answers from her mail client (delivered to INBOX):\n")
        show(raw.decode().replace("\r\n", "\n"), indent="    | ")
        self.dovecot.append(self.dovecot.user, "INBOX", raw)
        print()
        wait_for(lambda: REPLY_MARK in self.feed_text("fundraising"),
                 "the reply to appear as a comment in the fundraising feed")
        print("The fundraising feed now:\n")
        self.show_feed("fundraising")
        feed = self.feed_text("fundraising")
        if " wrote:" in feed[feed.index(REPLY_MARK):]:
            raise StepFailed("the comment still carries the quoted digest")

    def stop_daemon(self):
        heading("7. Shutdown")
        self.daemon.send_signal(signal.SIGTERM)
        try:
            rc = self.daemon.wait(10)
        except subprocess.TimeoutExpired:
            raise StepFailed("the daemon did not exit within 10 s of SIGTERM")
        if rc != 0:
            raise StepFailed("the daemon exited with status %d after SIGTERM" % rc)
        print("    mailfeed run: SIGTERM -> exit 0")

    def run(self):
        for step in (self.servers, self.config, self.mail, self.run_daemon, self.digest,
                     self.reply, self.stop_daemon):
            self.step = step.__name__
            step()

    # ---------------------------------------------------------------- cleanup

    def daemon_log_tail(self, n=40):
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return
        print("\nLast %d lines of the daemon log:" % min(n, len(lines)), file=sys.stderr)
        for line in lines[-n:]:
            print("    " + line, file=sys.stderr)

    def cleanup(self):
        if self.daemon and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(10)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        for srv in (self.sink, self.dovecot):
            if srv is not None:
                try:
                    srv.stop()
                except Exception as e:  # keep cleaning up the rest
                    print("demo: stopping a server: %s" % e, file=sys.stderr)
        shutil.rmtree(self.tmp, ignore_errors=True)


def main():
    binary = os.environ.get("MAILFEED_DEMO_BIN") or str(ROOT / "mailfeed")
    if not os.access(binary, os.X_OK):
        print("demo: %s is not an executable; run `make` first or set MAILFEED_DEMO_BIN"
              % binary, file=sys.stderr)
        return 1

    def stop(signum, _frame):
        raise Stopped(signal.Signals(signum).name)

    # SIGINT too: a shell that starts the demo in the background leaves it
    # ignored, and Python then never raises KeyboardInterrupt
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    demo = Demo(os.path.abspath(binary))
    rc = 0
    try:
        demo.run()
    except StepFailed as e:
        print("\ndemo FAILED in step \"%s\": %s" % (demo.step, e), file=sys.stderr)
        demo.daemon_log_tail()
        rc = 1
    except (KeyboardInterrupt, Stopped):
        print("\ndemo interrupted in step \"%s\"; cleaning up" % demo.step, file=sys.stderr)
        rc = 130
    except Exception as e:
        print("\ndemo FAILED in step \"%s\": %s: %s" % (demo.step, type(e).__name__, e),
              file=sys.stderr)
        demo.daemon_log_tail()
        rc = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        demo.cleanup()
    if rc == 0:
        print("    servers stopped, %s removed; every step worked." % demo.tmp)
    return rc


if __name__ == "__main__":
    sys.exit(main())
