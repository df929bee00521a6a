#!/bin/sh
# Runs each given libFuzzer target for SECONDS, starting from its checked-in
# seeds (tests/fuzz/corpus/NAME for build/fuzz/fuzz_NAME).  New inputs go to
# a scratch copy so the checked-in seeds stay small; crashes are written to
# build/fuzz/crashes/.  Exit status 1 when any target found a failure.
#   tests/fuzz/run.sh SECONDS build/fuzz/fuzz_mime [...]
set -u
[ $# -ge 2 ] || { echo "usage: $0 SECONDS TARGET..." >&2; exit 2; }
seconds=$1
shift
cd "$(dirname "$0")/../.."
mkdir -p build/fuzz/crashes
# what the libraries leak on their own (as in the other tests)
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0}"
status=0
for target in "$@"; do
	name=$(basename "$target")
	name=${name#fuzz_}
	work=$(mktemp -d)
	[ -d "tests/fuzz/corpus/$name" ] && cp -r "tests/fuzz/corpus/$name/." "$work/"
	echo "fuzz: $name for ${seconds}s"
	if ! "$target" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=25 \
		-artifact_prefix="build/fuzz/crashes/$name-" "$work" \
		>"build/fuzz/$name.log" 2>&1; then
		echo "fuzz: $name FAILED, see build/fuzz/$name.log and build/fuzz/crashes/"
		status=1
	else
		echo "fuzz: $name ok ($(grep -c . "build/fuzz/$name.log") log lines)"
	fi
	rm -rf "$work"
done
exit $status
