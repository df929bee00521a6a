#!/bin/sh
# demo.sh — `make demo`: the whole mailfeed flow on loopback (throwaway
# Dovecot and SMTP sink, local feed), shown step by step by scripts/demo.py.
# MAILFEED_DEMO_BIN names the binary to show (default ./mailfeed, the
# release build); the integration test points it at the sanitizer build.
set -eu
cd "$(dirname "$0")/.."
MAILFEED_DEMO_BIN=${MAILFEED_DEMO_BIN:-./mailfeed}
export MAILFEED_DEMO_BIN
if [ ! -x "$MAILFEED_DEMO_BIN" ]; then
	echo "demo: $MAILFEED_DEMO_BIN is not an executable; run make first" >&2
	exit 1
fi
# Debian's interpreter: the one on PATH may be a shim without python3-aiosmtpd.
exec /usr/bin/python3 -W ignore scripts/demo.py
