#!/usr/bin/python3
"""A minimal SMTP server for benchmarks: accepts every message on
127.0.0.1, keeps nothing but counts (messages, bytes, messages per
recipient), and answers as fast as a loop of recv/sendall allows.

usage: bench/smtp_count.py            prints the port, then serves until
                                      stdin closes; then prints one JSON line:
  {"messages": N, "bytes": B, "recipients": R, "max_per_recipient": M,
   "cpu_s": CPU seconds this process used, "connections": C}

bench/smtp_count.py --selftest N      sends N messages of 20 KB to a fresh
                                      server from a raw-socket client and
                                      prints the rate (what the sink can take)."""
import json
import os
import resource
import socket
import sys
import threading
import time

END = b"\r\n.\r\n"


class Counter:
    def __init__(self):
        self.lock = threading.Lock()
        self.messages = 0
        self.bytes = 0
        self.per_rcpt = {}
        self.connections = 0

    def add(self, rcpts, n):
        with self.lock:
            self.messages += 1
            self.bytes += n
            for r in rcpts:
                self.per_rcpt[r] = self.per_rcpt.get(r, 0) + 1


def serve_conn(conn, counter):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.sendall(b"220 localhost ESMTP bench\r\n")
    buf = b""
    rcpts = []
    while True:
        while b"\r\n" not in buf:
            chunk = conn.recv(65536)
            if not chunk:
                return
            buf += chunk
        line, buf = buf.split(b"\r\n", 1)
        verb = line[:4].upper()
        if verb in (b"EHLO", b"HELO"):
            conn.sendall(b"250-localhost\r\n250-8BITMIME\r\n250 SIZE 52428800\r\n")
        elif verb == b"MAIL":
            rcpts = []
            conn.sendall(b"250 OK\r\n")
        elif verb == b"RCPT":
            a = line[8:].strip()
            rcpts.append(a.strip(b"<>").decode("ascii", "replace").lower())
            conn.sendall(b"250 OK\r\n")
        elif verb == b"DATA":
            conn.sendall(b"354 go ahead\r\n")
            data = buf
            while not (data.startswith(END[2:]) or END in data[-len(END) - 65536:]):
                chunk = conn.recv(262144)
                if not chunk:
                    return
                data += chunk
            i = 0 if data.startswith(END[2:]) else data.find(END) + 2
            size, buf = i, data[i + 3:]
            counter.add(rcpts, size)
            conn.sendall(b"250 2.0.0 queued\r\n")
        elif verb == b"RSET" or verb == b"NOOP":
            conn.sendall(b"250 OK\r\n")
        elif verb == b"QUIT":
            conn.sendall(b"221 bye\r\n")
            return
        else:
            conn.sendall(b"502 5.5.2 not implemented\r\n")


def start(counter):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)

    def accept_loop():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with counter.lock:
                counter.connections += 1

            def run(c=conn):
                try:
                    serve_conn(c, counter)
                except OSError:
                    pass
                finally:
                    c.close()
            threading.Thread(target=run, daemon=True).start()
    threading.Thread(target=accept_loop, daemon=True).start()
    return srv


def report(counter):
    ru = resource.getrusage(resource.RUSAGE_SELF)
    with counter.lock:
        return {"messages": counter.messages, "bytes": counter.bytes,
                "recipients": len(counter.per_rcpt),
                "max_per_recipient": max(counter.per_rcpt.values(), default=0),
                "connections": counter.connections,
                "cpu_s": round(ru.ru_utime + ru.ru_stime, 3)}


def selftest(n):
    counter = Counter()
    srv = start(counter)
    port = srv.getsockname()[1]
    body = (b"Subject: x\r\n\r\n" + (b"y" * 76 + b"\r\n") * 260)
    c = socket.create_connection(("127.0.0.1", port))
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = c.makefile("rb")

    def cmd(line):
        c.sendall(line)
        while True:
            r = f.readline()
            if r[3:4] != b"-":
                return r
    f.readline()
    cmd(b"EHLO bench\r\n")
    cpu0 = time.process_time()
    t0 = time.monotonic()
    for i in range(n):
        cmd(b"MAIL FROM:<digest@example.org>\r\n")
        cmd(b"RCPT TO:<s%d@example.org>\r\n" % i)
        cmd(b"DATA\r\n")
        cmd(body + b".\r\n")
    dt = time.monotonic() - t0
    cmd(b"QUIT\r\n")
    srv.close()
    print(json.dumps({"messages": counter.messages, "seconds": round(dt, 3),
                      "per_s": round(n / dt), "process_cpu_s": round(time.process_time() - cpu0, 3)}))


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--selftest":
        selftest(int(sys.argv[2]))
        return
    counter = Counter()
    srv = start(counter)
    print(srv.getsockname()[1], flush=True)
    sys.stdin.read()
    srv.close()
    print(json.dumps(report(counter)), flush=True)


if __name__ == "__main__":
    main()
