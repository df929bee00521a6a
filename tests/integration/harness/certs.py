"""Throwaway certificate authorities and server certificates for the
integration tests, made with the openssl command line (EC P-256, valid two
days).  Each CA lives in its own directory: ca.crt / ca.key, and every
certificate it issues sits next to it as NAME.crt / NAME.key."""
import os
import subprocess
from pathlib import Path


def _openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (args[0], r.stderr.strip()))


class CA:
    """A certificate authority in `dir`: .crt and .key are paths (str)."""

    def __init__(self, dir, cn="mailfeed test CA"):
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.crt = str(self.dir / "ca.crt")
        self.key = str(self.dir / "ca.key")
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-days", "2", "-subj", "/CN=" + cn,
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                 "-keyout", self.key, "-out", self.crt, cwd=self.dir)
        os.chmod(self.key, 0o600)
        os.chmod(self.crt, 0o644)

    def issue(self, name, dns=(), ips=()):
        """Server certificate `name` (CN = first DNS name, else name) with the
        given subjectAltNames.  Returns (crt_path, key_path)."""
        crt = str(self.dir / (name + ".crt"))
        key = str(self.dir / (name + ".key"))
        csr = self.dir / (name + ".csr")
        ext = self.dir / (name + ".ext")
        sans = ["DNS:" + d for d in dns] + ["IP:" + i for i in ips]
        ext.write_text("subjectAltName=%s\nextendedKeyUsage=serverAuth\n"
                       "basicConstraints=CA:FALSE\n" % ",".join(sans))
        cn = dns[0] if dns else name
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-subj", "/CN=" + cn, "-keyout", key, "-out", str(csr), cwd=self.dir)
        _openssl("x509", "-req", "-in", str(csr), "-CA", self.crt, "-CAkey", self.key,
                 "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", crt,
                 cwd=self.dir)
        os.chmod(key, 0o600)
        os.chmod(crt, 0o644)
        csr.unlink()
        ext.unlink()
        return crt, key


class TestCA:
    """What the `tls_ca` fixture hands out:
    .ca_file          the CA that servers' certificates chain to
    .cert, .key       server certificate for localhost and 127.0.0.1
    .wrong_cert, .wrong_key   same CA, but only for imap.example.org
    .other_ca_file    an unrelated CA ("untrusted" tests)
    .other_cert, .other_key   localhost/127.0.0.1 certificate from the other CA"""

    def __init__(self, dir):
        dir = Path(dir)
        self.ca = CA(dir / "ca")
        self.ca_file = self.ca.crt
        self.cert, self.key = self.ca.issue("server", dns=("localhost",), ips=("127.0.0.1",))
        self.wrong_cert, self.wrong_key = self.ca.issue("wrongname", dns=("imap.example.org",))
        self.other = CA(dir / "other", cn="unrelated test CA")
        self.other_ca_file = self.other.crt
        self.other_cert, self.other_key = self.other.issue(
            "server", dns=("localhost",), ips=("127.0.0.1",))
