"""`make install` puts the binary, man pages, unit, sysusers/tmpfiles
snippets and the example config where an admin expects them."""
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_make_install_into_destdir(tmp_path):
    dest = str(tmp_path / "root")
    r = subprocess.run(["make", "-s", "-C", ROOT, "install", "DESTDIR=" + dest, "PREFIX=/usr"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    for path in ("usr/sbin/mailfeed", "usr/share/man/man8/mailfeed.8",
                 "usr/share/man/man5/mailfeed.conf.5", "etc/mailfeed/mailfeed.conf.example",
                 "lib/systemd/system/mailfeed.service", "usr/lib/sysusers.d/mailfeed.conf",
                 "usr/lib/tmpfiles.d/mailfeed.conf"):
        assert os.path.exists(os.path.join(dest, path)), path
    assert os.access(os.path.join(dest, "usr/sbin/mailfeed"), os.X_OK)
    unit = open(os.path.join(dest, "lib/systemd/system/mailfeed.service")).read()
    assert "@SBINDIR@" not in unit
    assert "ExecStart=/usr/sbin/mailfeed -c /etc/mailfeed/mailfeed.conf run" in unit
    v = subprocess.run([os.path.join(dest, "usr/sbin/mailfeed"), "--version"],
                       capture_output=True, text=True)
    assert v.returncode == 0 and v.stdout.startswith("mailfeed ")
    for page in ("usr/share/man/man8/mailfeed.8", "usr/share/man/man5/mailfeed.conf.5"):
        m = subprocess.run(["man", "--warnings", "-l", os.path.join(dest, page)],
                           capture_output=True, text=True, env=dict(os.environ, MANWIDTH="80"))
        assert m.returncode == 0 and "mailfeed" in m.stdout
        assert "warning" not in m.stderr.lower(), m.stderr


def test_make_install_honours_sysconfdir_and_flags(tmp_path):
    """A packager's layout: another SYSCONFDIR reaches the unit, the tmpfiles
    entry and the compiled-in default config; CFLAGS and LDFLAGS are used."""
    dest = str(tmp_path / "root")
    build = tmp_path / "src"
    _copy_tree(build)
    r = subprocess.run(["make", "-s", "-j2", "-C", str(build), "install", "DESTDIR=" + dest,
                        "PREFIX=/opt/mf", "SYSCONFDIR=/opt/mf/etc",
                        "CFLAGS=-O1 -DMAILFEED_TEST_CFLAGS", "LDFLAGS=-Wl,-z,noexecstack",
                        "CC=gcc"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    assert "-Werror" not in r.stdout + r.stderr
    unit = open(os.path.join(dest, "lib/systemd/system/mailfeed.service")).read()
    assert "ExecStart=/opt/mf/sbin/mailfeed -c /opt/mf/etc/mailfeed/mailfeed.conf run" in unit
    tmpfiles = open(os.path.join(dest, "usr/lib/tmpfiles.d/mailfeed.conf")).read()
    assert "d /opt/mf/etc/mailfeed 0750 root mailfeed -" in tmpfiles
    h = subprocess.run([os.path.join(dest, "opt/mf/sbin/mailfeed"), "--help"],
                       capture_output=True, text=True)
    assert "/opt/mf/etc/mailfeed/mailfeed.conf" in h.stdout


def _copy_tree(dst):
    """The source tree without build products, as a release tarball has it."""
    def ignore(d, names):
        top = os.path.abspath(d) == ROOT
        return [n for n in names if n in (".git", "__pycache__", ".pytest_cache")
                or (top and n in ("build", "mailfeed", "demo-run"))
                or n.endswith((".o", ".deb"))]
    shutil.copytree(ROOT, dst, ignore=ignore, symlinks=True)


@pytest.mark.slow
def test_debian_package_builds_and_installs(tmp_path):
    """dpkg-buildpackage builds a .deb that lintian finds no error in; unpacked
    into a scratch root it holds the daemon in sbin, the man pages, the unit,
    and sysusers/tmpfiles entries that create the user and the config
    directory when systemd's tools apply them to that root."""
    src = tmp_path / "mailfeed"
    _copy_tree(src)
    r = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b", "-j2"], cwd=src,
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    deb = next(tmp_path.glob("mailfeed_*_*.deb"))

    lint = subprocess.run(["lintian", "--fail-on", "error", str(deb)],
                          capture_output=True, text=True, timeout=600)
    errors = [l for l in lint.stdout.splitlines() if l.startswith("E:")]
    assert lint.returncode == 0 and not errors, lint.stdout + lint.stderr

    root = tmp_path / "root"
    subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    for path in ("usr/sbin/mailfeed", "usr/share/man/man8/mailfeed.8.gz",
                 "usr/share/man/man5/mailfeed.conf.5.gz", "lib/systemd/system/mailfeed.service",
                 "usr/lib/sysusers.d/mailfeed.conf", "usr/lib/tmpfiles.d/mailfeed.conf",
                 "usr/share/doc/mailfeed/copyright", "etc/mailfeed/mailfeed.conf.example"):
        assert (root / path).exists(), path
    assert not (root / "usr/bin/mailfeed").exists()
    v = subprocess.run([str(root / "usr/sbin/mailfeed"), "--version"], capture_output=True,
                       text=True)
    assert v.returncode == 0 and v.stdout.startswith("mailfeed 0.1.0"), v
    unit = (root / "lib/systemd/system/mailfeed.service").read_text()
    assert "ExecStart=/usr/sbin/mailfeed -c /etc/mailfeed/mailfeed.conf run" in unit

    # the maintainer scripts create the user, then the config directory
    info = subprocess.run(["dpkg-deb", "-I", str(deb), "postinst"], capture_output=True,
                          text=True, check=True).stdout
    assert info.index("systemd-sysusers") < info.index("systemd-tmpfiles")
    (root / "etc").mkdir(exist_ok=True)
    subprocess.run(["systemd-sysusers", f"--root={root}",
                    str(root / "usr/lib/sysusers.d/mailfeed.conf")], check=True)
    assert re.search(r"^mailfeed:x:\d+:\d+:mailfeed gateway:/var/lib/mailfeed:",
                     (root / "etc/passwd").read_text(), re.M)
    subprocess.run(["systemd-tmpfiles", f"--root={root}", "--create",
                    str(root / "usr/lib/tmpfiles.d/mailfeed.conf")], check=True)
    st = os.stat(root / "etc/mailfeed")
    gid = int(re.search(r"^mailfeed:x:(\d+):", (root / "etc/group").read_text(), re.M).group(1))
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o750, 0, gid)


def test_dependency_lists_match_the_link_line():
    """Every library the Makefile links is named in the README's dependency
    sentence and built against in debian/control."""
    make = open(os.path.join(ROOT, "Makefile")).read()
    pkgs = []
    for m in re.finditer(r"^PKGS\s*\+?:?=\s*(.+)$", make, re.M):
        pkgs += m.group(1).split()
    pkgs.append("libetpan")
    readme = open(os.path.join(ROOT, "README.md")).read()
    sentence = re.search(r"It is one C binary linked with (.+?)\.\n\n", readme, re.S).group(1)
    words = {"sqlite3": "SQLite", "openssl": "OpenSSL", "gmime-3.0": "GMime"}
    control = open(os.path.join(ROOT, "debian/control")).read()
    dev = {"sqlite3": "libsqlite3-dev", "openssl": "libssl-dev", "libcurl": "libcurl",
           "jansson": "libjansson-dev", "inih": "libinih-dev", "gumbo": "libgumbo-dev"}
    for p in pkgs:
        assert words.get(p, p) in sentence, f"{p} missing from the README's dependency list"
        assert dev.get(p, p + "-dev") in control, f"{p} missing from debian/control"
