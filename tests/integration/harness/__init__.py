"""Loopback test servers shared by the integration tests and `make demo`:
throwaway CAs (certs.py), Dovecot (dovecot.py) and an SMTP sink
(smtpsink.py).  conftest.py wraps them in pytest fixtures; the demo calls
demo_servers() directly."""
import os

from .certs import CA, TestCA
from .dovecot import Dovecot, free_port
from .smtpsink import SmtpSink

__all__ = ["CA", "TestCA", "Dovecot", "SmtpSink", "free_port", "demo_servers"]


def demo_servers(tmp):
    """Dovecot (IMAPS, user alice) and an SMTP sink requiring STARTTLS and
    AUTH (user feed), both with certificates from a CA made in tmp/tls.
    Returns (dovecot, sink); the caller stops both.  dovecot.ca_file lies
    under tmp."""
    ca = TestCA(os.path.join(str(tmp), "tls"))
    dovecot = Dovecot(ca)
    try:
        sink = SmtpSink(os.path.join(str(tmp), "sink"), cert=ca.cert, key=ca.key,
                        require_tls=True, username="feed", password="feed-secret")
    except Exception:
        dovecot.stop()
        raise
    return dovecot, sink
