#!/bin/sh
# Installs the Debian packages mailfeed needs to build, test and demo,
# but only those that are missing. Safe to run repeatedly.
set -eu
# One package a line, so that additions never collide.
PKGS="
gcc
make
pkg-config
libetpan-dev
libssl-dev
libjansson-dev
libsqlite3-dev
libsystemd-dev
libinih-dev
libgumbo-dev
libcmocka-dev
libsasl2-modules
dovecot-imapd
python3-aiosmtpd
python3-pytest
python3-cryptography
openssl
curl
sqlite3
clang
libclang-rt-14-dev
time
systemd
man-db
libseccomp-dev
libmicrohttpd-dev
chromium
libcurl4-gnutls-dev
dpkg-dev
debhelper
lintian
libxapian30
libical3
libgmime-3.0-dev
clang-format
cppcheck
universal-ctags
systemd-journal-remote
libpq-dev
postgresql
python3-psycopg2
"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' ||
		missing="$missing $p"
done
if [ -n "$missing" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "mailfeed: missing packages:$missing (run as root or install them)" >&2
		exit 1
	fi
	echo "mailfeed: installing$missing" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >/dev/null
	# shellcheck disable=SC2086
	apt-get install -y -q --no-install-recommends $missing >/dev/null
fi

# Cyrus IMAP for the integration tests: its package conflicts with Dovecot's
# (both provide imap-server), so it is unpacked under build/cyrus, not
# installed; tests/integration/harness/cyrus.py runs it from there.
root=$(cd "$(dirname "$0")/.." && pwd)
cyrus="$root/build/cyrus"
if [ ! -x "$cyrus/usr/lib/cyrus/bin/imapd" ] && [ "$(id -u)" = 0 ]; then
	tmp=$(mktemp -d)
	chmod 755 "$tmp"
	if (cd "$tmp" && apt-get download cyrus-common cyrus-imapd >/dev/null 2>&1 ||
		{ apt-get update -q >/dev/null && apt-get download cyrus-common cyrus-imapd >/dev/null; }); then
		mkdir -p "$cyrus"
		for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$cyrus"; done
		echo "mailfeed: Cyrus IMAP unpacked under $cyrus for the tests" >&2
	else
		echo "mailfeed: could not download Cyrus IMAP; its tests will be skipped" >&2
	fi
	rm -rf "$tmp"
fi
