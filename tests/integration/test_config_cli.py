"""check-config as an admin runs it: exit codes, FILE:LINE messages, the
shipped example config, and the refusal of shared secret files."""
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("MAILFEED_BIN", str(ROOT / "build/asan/mailfeed"))
EXAMPLE = ROOT / "conf/mailfeed.conf.example"


def run(*args, env=None):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=60, env=env)


def secret(path, data=b"x" * 40, mode=0o600):
    path.write_bytes(data)
    path.chmod(mode)


@pytest.fixture
def example(tmp_path):
    """The shipped example with its /etc/mailfeed paths moved into tmp_path."""
    text = EXAMPLE.read_text().replace("/etc/mailfeed/", f"{tmp_path}/")
    conf = tmp_path / "mailfeed.conf"
    conf.write_text(text)
    for name in ("secret", "chatter.key", "imap.pass", "smtp.pass"):
        secret(tmp_path / name)
    return conf


def test_example_config_passes(example):
    r = run("-c", str(example), "check-config")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{example}: ok: 1 account, 2 mailboxes, backend chatter"
    assert r.stderr == ""


def test_example_config_documents_every_key(example):
    """Every key the parser accepts appears in the example (set or commented)."""
    text = EXAMPLE.read_text()
    bad = example.parent / "bad.conf"
    sections = ["gateway", "feed", "account a", "mailbox m", "replies", "smtp", "digest",
                "subscriber a@example.org"]
    for sect in sections:
        bad.write_text(f"[{sect}]\nno_such_key = 1\n")
        r = run("-c", str(bad), "check-config")
        m = re.search(r"valid keys: (.*)", r.stderr)
        assert m, r.stderr
        for key in m.group(1).split(", "):
            assert re.search(rf"^;?{key} = ", text, re.M), \
                f"[{sect}] {key} missing from the example"


def test_example_refuses_shared_secret(example):
    (example.parent / "imap.pass").chmod(0o644)
    r = run("-c", str(example), "check-config")
    assert r.returncode == 2
    line = next(i for i, l in enumerate(example.read_text().splitlines(), 1)
                if l.startswith("password_file = ") and "imap.pass" in l)
    assert f"{example}:{line}: password_file: {example.parent}/imap.pass is readable by " \
           f"others (mode 0644); run: chmod 600 {example.parent}/imap.pass" in r.stderr
    assert r.stdout == ""
    (example.parent / "imap.pass").chmod(0o620)
    r = run("-c", str(example), "check-config")
    assert r.returncode == 2
    assert f"imap.pass is writable by group or others (mode 0620)" in r.stderr


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving files away needs root")


def _service_layout(example, owner_of_state=None):
    """Every secret 0640 root:nogroup, as Debian keeps them for a service
    whose group is nogroup (the user nobody stands in for mailfeed)."""
    state = example.parent / "state"
    state.mkdir()
    if owner_of_state is not None:
        os.chown(state, owner_of_state, owner_of_state)
    text = example.read_text().replace("/var/lib/mailfeed/state.db", f"{state}/state.db")
    example.write_text(text)
    for name in ("secret", "chatter.key", "imap.pass", "smtp.pass"):
        os.chown(example.parent / name, 0, 65534)
        (example.parent / name).chmod(0o640)
    example.parent.chmod(0o755)


@needs_root
def test_debian_secret_modes_judged_for_service_user(example):
    _service_layout(example)
    # root itself is not in nogroup: a group it is not in may read the file
    r = run("-c", str(example), "check-config")
    assert r.returncode == 2
    assert f"{example.parent}/imap.pass is readable by group nogroup, which root is not " \
           f"in (mode 0640)" in r.stderr
    assert "check-config --user NAME judges for the service's user" in r.stderr
    # judged for the service user, whose group it is: accepted
    r = run("-c", str(example), "check-config", "--user", "nobody")
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith("ok: 1 account, 2 mailboxes, backend chatter\n")
    # a file the service user cannot read at all
    (example.parent / "smtp.pass").chmod(0o600)
    r = run("-c", str(example), "check-config", "--user", "nobody")
    assert r.returncode == 2
    assert f"{example.parent}/smtp.pass cannot be read by nobody (owner uid 0, group " \
           f"nogroup, mode 0600)" in r.stderr
    r = run("-c", str(example), "check-config", "--user", "no-such-user")
    assert r.returncode == 2
    assert "--user no-such-user: there is no user no-such-user" in r.stderr


@needs_root
def test_root_judges_for_owner_of_state_directory(example):
    _service_layout(example, owner_of_state=65534)
    r = run("-c", str(example), "check-config")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"secrets judged for user nobody (owner of {example.parent}/state)\n")


def test_several_errors_each_with_its_line(tmp_path):
    secret(tmp_path / "imap.pass", b"pw\n")
    conf = tmp_path / "bad.conf"
    conf.write_text(
        "[gateway]\n"                      # 1
        "max_message_size = huge\n"        # 2
        "colour = blue\n"                  # 3
        "[feed]\n"                         # 4
        "backend = mattermost\n"           # 5
        "url = https://chat.example.org\n"  # 6
        "[account staff]\n"                # 7
        "host = imap.example.org\n"        # 8
        "tls = none\n"                     # 9
        "username = u\n"                   # 10
        "password_file = imap.pass\n"      # 11
        "[mailbox a]\n"                    # 12
        "account = staff\n"                # 13
        "folder = Team\n"                  # 14
        "group = G1\n"                     # 15
        "[mailbox b]\n"                    # 16
        "account = staff\n"                # 17
        "folder = Team\n"                  # 18
        "group = G2\n"                     # 19
        "[mailbox c]\n"                    # 20
        "account = ghost\n"                # 21
        "folder = X\n"                     # 22
        "group = G3\n"                     # 23
        "[digest]\n"                       # 24
        "timezone = Nowhere/City\n"        # 25
    )
    r = run("-c", str(conf), "check-config")
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    expected = [
        (2, "max_message_size = huge: is not a size"),
        (3, "unknown key 'colour' in [gateway]"),
        (5, "backend = mattermost needs 'token_file' in [feed]"),
        (9, "tls = none sends the password in clear to imap.example.org"),
        (18, "already mapped by [mailbox a] at line 14"),
        (21, "names account 'ghost', but there is no [account ghost] section"),
        (25, "timezone = Nowhere/City: names no time zone"),
    ]
    assert len(lines) == len(expected), r.stderr
    for (num, text), got in zip(expected, lines):
        assert got.startswith(f"{conf}:{num}: "), got
        assert text in got, got


def test_missing_config_file(tmp_path):
    r = run("-c", str(tmp_path / "none.conf"), "check-config")
    assert r.returncode == 2
    assert f"{tmp_path}/none.conf: cannot open config: No such file or directory" in r.stderr


def test_config_from_environment(example):
    env = dict(os.environ, MAILFEED_CONFIG=str(example))
    r = run("check-config", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{example}: ok:")


def test_token_command_is_run(tmp_path):
    conf = tmp_path / "m.conf"
    conf.write_text("[account a]\nhost = 127.0.0.1\nusername = u\n"
                    "oauth2_token_command = ls /nonexistent/mailfeed-token\n")
    r = run("-c", str(conf), "check-config")
    assert r.returncode == 2
    assert re.search(rf"^{conf}:4: oauth2_token_command: ls exited with status \d+: .*"
                     r"/nonexistent/mailfeed-token", r.stderr, re.M), r.stderr
    conf.write_text("[account a]\nhost = 127.0.0.1\nusername = u\n"
                    "oauth2_token_command = echo token\n")
    r = run("-c", str(conf), "check-config")
    assert r.returncode == 0, r.stderr
    assert "1 account, 0 mailboxes, backend local" in r.stdout


def test_help_and_bad_arguments(example):
    r = run("-c", str(example), "check-config", "--help")
    assert r.returncode == 0
    assert r.stdout.startswith("usage: mailfeed [-c FILE] check-config")
    r = run("-c", str(example), "check-config", "--frobnicate")
    assert r.returncode == 2
    assert "unexpected argument '--frobnicate'" in r.stderr


def test_token_command_that_hangs_is_stopped(tmp_path):
    conf = tmp_path / "m.conf"
    conf.write_text("[account a]\nhost = 127.0.0.1\nusername = u\n"
                    "oauth2_token_command = sleep 60\n")
    r = run("-c", str(conf), "check-config")
    assert r.returncode == 2
    assert f"{conf}:4: oauth2_token_command: sleep did not finish within 10 s" in r.stderr
