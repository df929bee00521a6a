#!/usr/bin/python3
"""Reference for the ingest benchmark: one raw `UID FETCH 1:* BODY.PEEK[]`
of a folder over IMAPS, bodies read and discarded (Python's imaplib).
usage: raw_fetch.py HOST PORT CAFILE USER PASSWORD FOLDER"""
import imaplib
import ssl
import sys

host, port, ca, user, pw, folder = sys.argv[1:7]
ctx = ssl.create_default_context(cafile=ca)
m = imaplib.IMAP4_SSL(host, int(port), ssl_context=ctx)
m.login(user, pw)
m.select(folder, readonly=True)
typ, data = m.uid("FETCH", "1:*", "(BODY.PEEK[])")
n = sum(1 for d in data if isinstance(d, tuple))
size = sum(len(d[1]) for d in data if isinstance(d, tuple))
del data
m.logout()
print("%d messages, %d bytes" % (n, size))
