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


def _listening(port):
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


def _uses(pid, tmp):
    """Whether process pid has a file under tmp open (Dovecot runs in a
    session of its own, with its config, sockets and logs there)."""
    try:
        for fd in os.listdir("/proc/%s/fd" % pid):
            try:
                if os.readlink("/proc/%s/fd/%s" % (pid, fd)).startswith(tmp + "/"):
                    return True
            except OSError:
                pass
    except OSError:
        pass
    return False


def _session_processes(sid, tmp):
    """(pid, command line) of the live processes of session sid, and of any
    process that has a file under tmp open."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            if os.getsid(int(pid)) != sid and not _uses(pid, tmp):
                continue
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open("/proc/%s/stat" % pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue  # exited, not yet reaped
        except OSError:
            continue
        found.append((int(pid), cmd))
    return found


def test_demo_ctrl_c_stops_and_cleans_up():
    """Ctrl-C in a terminal sends SIGINT to the whole foreground process
    group: the demo, the daemon and the servers it started.  The demo must
    still stop everything and remove its temporary directory."""
    import select
    import signal
    import time
    env = dict(os.environ, MAILFEED_DEMO_BIN=MAILFEED, PYTHONUNBUFFERED="1")
    p = subprocess.Popen([str(ROOT / "scripts" / "demo.sh")], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, start_new_session=True)
    out = b""
    tmp = None
    deadline = time.monotonic() + 120
    try:
        # wait until the daemon runs (section 3 or later) and the temp dir is known
        while time.monotonic() < deadline:
            r, _, _ = select.select([p.stdout], [], [], 1)
            if r:
                chunk = os.read(p.stdout.fileno(), 65536)
                if not chunk:
                    break
                out += chunk
            m = re.search(rb"temporary dir\s+(\S+)", out)
            if m:
                tmp = m.group(1).decode()
            if tmp and re.search(rb"^== 5\. ", out, re.M):
                break
        assert tmp, out.decode(errors="replace")[-3000:]
        running = " ".join(cmd for _pid, cmd in _session_processes(p.pid, tmp))
        assert " run" in running, running
        ports = [int(x) for x in re.findall(rb"127\.0\.0\.1:(\d+)", out)]
        assert len(ports) >= 2 and all(_listening(port) for port in ports), ports
        os.killpg(p.pid, signal.SIGINT)
        rest, _ = p.communicate(timeout=60)
        out += rest
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    text = out.decode(errors="replace")
    assert p.returncode == 130, text[-3000:]
    assert "interrupted" in text and "cleaning up" in text
    assert not os.path.exists(tmp), "temporary directory left behind"
    left = []
    for _ in range(50):  # servers may take a moment to go
        left = _session_processes(p.pid, tmp)
        if not left:
            break
        time.sleep(0.1)
    assert not left, left
    assert not any(_listening(port) for port in ports), "a server still listens"
