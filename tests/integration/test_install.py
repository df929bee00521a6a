"""`make install` puts the binary, man pages, unit, sysusers/tmpfiles
snippets and the example config where an admin expects them."""
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_make_install_into_destdir(tmp_path):
    dest = str(tmp_path / "root")
    r = subprocess.run(["make", "-s", "-C", ROOT, "install", "DESTDIR=" + dest, "PREFIX=/usr"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    for path in ("usr/bin/mailfeed", "usr/share/man/man8/mailfeed.8",
                 "usr/share/man/man5/mailfeed.conf.5", "etc/mailfeed/mailfeed.conf.example",
                 "lib/systemd/system/mailfeed.service", "usr/lib/sysusers.d/mailfeed.conf",
                 "usr/lib/tmpfiles.d/mailfeed.conf"):
        assert os.path.exists(os.path.join(dest, path)), path
    assert os.access(os.path.join(dest, "usr/bin/mailfeed"), os.X_OK)
    unit = open(os.path.join(dest, "lib/systemd/system/mailfeed.service")).read()
    assert "@BINDIR@" not in unit and "/usr/bin/mailfeed" in unit
    v = subprocess.run([os.path.join(dest, "usr/bin/mailfeed"), "--version"],
                       capture_output=True, text=True)
    assert v.returncode == 0 and v.stdout.startswith("mailfeed ")
    for page in ("usr/share/man/man8/mailfeed.8", "usr/share/man/man5/mailfeed.conf.5"):
        m = subprocess.run(["man", "--warnings", "-l", os.path.join(dest, page)],
                           capture_output=True, text=True, env=dict(os.environ, MANWIDTH="80"))
        assert m.returncode == 0 and "mailfeed" in m.stdout
        assert "warning" not in m.stderr.lower(), m.stderr
