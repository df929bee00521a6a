"""One owner of the state: a second daemon on the same state refuses to
start and names the running one; a command run as root against the
service's state works as the state's owner and leaves no root-owned file."""
import os
import pwd
import shutil
import signal
import tempfile

import pytest

from conftest import run_mailfeed, start_daemon, stop_daemon, wait_for, write_config


def test_second_daemon_refuses_and_names_the_first(dovecot, tmp_path):
    cfg = write_config(tmp_path, dovecot)
    p = start_daemon(cfg.path)
    assert wait_for(lambda: "run.ready" in open(p.log_path).read(), 20)
    for args in (["run"], ["run", "--once"]):
        r = run_mailfeed(cfg.path, *args, timeout=20)
        assert r.returncode == 1
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert lines == ["mailfeed: another mailfeed (pid %d) is running on %s; stop it "
                         "first (systemctl stop mailfeed)" % (p.pid, cfg.state)], r.stderr
    with open(cfg.state + ".lock") as f:
        assert f.read().strip() == str(p.pid)
    # commands beside the daemon still work
    assert run_mailfeed(cfg.path, "status").returncode == 0
    # the kernel releases the lock of a killed daemon
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    q = start_daemon(cfg.path)
    assert wait_for(lambda: "run.ready" in open(q.log_path).read(), 20), \
        open(q.log_path).read()
    stop_daemon(q)


@pytest.fixture
def service_dir():
    """A state directory owned by nobody, reachable by nobody."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    top = tempfile.mkdtemp(prefix="mf-owner-")
    os.chmod(top, 0o755)
    d = os.path.join(top, "state")
    os.mkdir(d, 0o750)
    nobody = pwd.getpwnam("nobody")
    os.chown(d, nobody.pw_uid, nobody.pw_gid)
    yield d, nobody
    shutil.rmtree(top)


def owners(d):
    return {f: os.stat(os.path.join(d, f)).st_uid for f in os.listdir(d)}


def test_root_command_runs_as_the_state_owner(service_dir, tmp_path):
    d, nobody = service_dir
    state = os.path.join(d, "state.db")
    cfg = write_config(tmp_path, gateway={"state": state})
    r = run_mailfeed(cfg.path, "subscribe", "bob@example.org", "--groups", "team")
    assert r.returncode == 0, r.stderr
    assert os.path.exists(state)
    assert set(owners(d).values()) == {nobody.pw_uid}, owners(d)
    r = run_mailfeed(cfg.path, "status")
    assert r.returncode == 0, r.stderr
    assert set(owners(d).values()) == {nobody.pw_uid}, owners(d)


def test_root_refuses_when_it_cannot_become_the_owner(service_dir, tmp_path):
    d, _nobody = service_dir
    # a uid without a passwd entry and no way to switch groups by name
    # still works by number; a state whose owner cannot be taken is refused
    os.chown(d, 0, 0)
    state = os.path.join(d, "state.db")
    open(state, "w").close()
    os.chown(state, 4242, 4242)
    cfg = write_config(tmp_path, gateway={"state": state})
    r = run_mailfeed(cfg.path, "status")
    # uid 4242 cannot read the root-owned 0750 directory: the command fails
    # as that user instead of touching the state as root
    assert r.returncode != 0
    assert os.stat(state).st_uid == 4242
    assert [f for f in os.listdir(d) if os.stat(os.path.join(d, f)).st_uid == 0] == []
