"""An SMTP sink for the integration tests: aiosmtpd on 127.0.0.1 (random
port) in a thread of the test process, offering STARTTLS with the test CA's
localhost certificate, optionally requiring TLS and AUTH PLAIN/LOGIN.
Every accepted message is written to DIR/NNNN.eml plus DIR/NNNN.json
(envelope, tls, auth); the .json appears last, so its presence means the
message is complete.  Replies can be scripted to inject failures."""
import asyncio
import email
import email.policy
import json
import os
import ssl
import threading
import types
import logging
import time
from pathlib import Path

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

# aiosmtpd 1.4 logs a deprecation of its own internals on every AUTH
logging.getLogger("mail.log").setLevel(logging.ERROR)


class SmtpSink:
    """Attributes: host, port, dir, username / password (None without AUTH).

    Failure injection (each reply is an "NNN text" string):
      fail("DATA", "451 4.3.0 try later", times=2)  next 2 DATA answered so
      fail("RCPT", "550 5.1.1 no such user", address="gone@example.org")
          every RCPT to that address refused (times=None = for ever)
      fail("MAIL", "421 4.3.2 shutting down")      also "MAIL"
      clear_failures()

    Holding a client at a chosen moment (crash tests):
      h = pause("RCPT", after=40)  the first RCPT (or "MAIL", or "DATA": the
          message is stored, as a relay queues it, but not yet answered)
          once 40 messages are stored waits; h.reached (an Event) is set
          then, and that client goes on when h.release is set (or after
          60 s).  Other clients are served meanwhile."""

    def __init__(self, dir, cert=None, key=None, require_tls=False, username=None,
                 password=None):
        self.host = "127.0.0.1"
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.username, self.password = username, password
        self.count = 0
        self.failures = []  # [stage, reply, address or None, times left or None]
        self.pauses = []
        self.lock = threading.Lock()
        tls = None
        if cert:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(cert, key)
        sink = self

        class Handler:
            async def handle_MAIL(self, server, session, env, address, options):
                await sink._hold("MAIL")
                r = sink._injected("MAIL", address)
                if r:
                    return r
                env.mail_from = address
                env.mail_options.extend(options)
                return "250 OK"

            async def handle_RCPT(self, server, session, env, address, options):
                await sink._hold("RCPT")
                r = sink._injected("RCPT", address)
                if r:
                    return r
                env.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server, session, env):
                r = sink._injected("DATA", None)
                if r:
                    return r
                reply = sink._store(session, env)
                await sink._hold("DATA")  # taken, not yet answered
                return reply

        def authenticator(server, session, envelope, mechanism, auth_data):
            if not isinstance(auth_data, LoginPassword):
                return AuthResult(success=False, handled=False)
            ok = (auth_data.login.decode() == self.username and
                  auth_data.password.decode() == self.password)
            return AuthResult(success=ok, handled=False, auth_data=auth_data)

        def factory():
            return SMTP(Handler(), hostname="localhost", tls_context=tls,
                        require_starttls=require_tls,
                        authenticator=authenticator if username else None,
                        auth_required=bool(username), auth_require_tls=bool(tls),
                        data_size_limit=50 * 1024 * 1024)

        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(
                self.loop.create_server(factory, "127.0.0.1", 0))
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        if not ready.wait(10):
            raise RuntimeError("SMTP sink did not start")

    async def _hold(self, stage):
        """Holds this client only; the others go on."""
        with self.lock:
            # at DATA this client's message is already counted
            before = self.count - (1 if stage == "DATA" else 0)
            held = [p for p in self.pauses if p.stage == stage and before >= p.after
                    and not p.reached.is_set()]
            for p in held:
                p.reached.set()
        for p in held:
            await asyncio.get_running_loop().run_in_executor(None, p.release.wait, 60)

    def _injected(self, stage, address):
        with self.lock:
            for f in self.failures:
                if f[0] != stage or (f[2] is not None and f[2] != address):
                    continue
                if f[3] is not None:
                    f[3] -= 1
                    if f[3] <= 0:
                        self.failures.remove(f)
                return f[1]
        return None

    def _store(self, session, env):
        with self.lock:
            self.count += 1
            n = self.count
        base = self.dir / ("%04d" % n)
        (base.with_suffix(".eml")).write_bytes(env.original_content or env.content)
        meta = {"mail_from": env.mail_from, "rcpt_tos": list(env.rcpt_tos),
                "mail_options": list(env.mail_options), "tls": session.ssl is not None,
                "auth": bool(session.authenticated),
                "login": (session.auth_data.login.decode()
                          if isinstance(session.auth_data, LoginPassword) else None)}
        tmp = base.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta))
        os.rename(tmp, base.with_suffix(".json"))
        return "250 2.0.0 queued as %04d" % n

    def fail(self, stage, reply, times=1, address=None):
        with self.lock:
            self.failures.append([stage.upper(), reply, address, times])

    def pause(self, stage, after):
        p = types.SimpleNamespace(stage=stage.upper(), after=after,
                                  reached=threading.Event(), release=threading.Event())
        with self.lock:
            self.pauses.append(p)
        return p

    def clear_failures(self):
        with self.lock:
            self.failures.clear()

    def messages(self):
        """[(envelope dict, email.message.EmailMessage, raw bytes)] in
        arrival order.  The dict has mail_from, rcpt_tos, mail_options,
        tls, auth, login."""
        out = []
        for meta in sorted(self.dir.glob("*.json")):
            raw = meta.with_suffix(".eml").read_bytes()
            out.append((json.loads(meta.read_text()),
                        email.message_from_bytes(raw, policy=email.policy.default), raw))
        return out

    def wait_for(self, n, timeout=10):
        """Waits until at least n messages arrived; returns messages().
        Raises AssertionError naming what did arrive on timeout."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            msgs = self.messages()
            if len(msgs) >= n:
                return msgs
            time.sleep(0.05)
        msgs = self.messages()
        assert len(msgs) >= n, "SMTP sink got %d of %d messages within %s s" % (
            len(msgs), n, timeout)
        return msgs

    def stop(self):
        """Closes the listener and the loop.  Idempotent."""
        if not self.loop.is_running():
            return

        async def close():
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
