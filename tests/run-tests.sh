#!/bin/sh
# Runs every test: the cmocka unit tests, then the integration tests
# (pytest, real Dovecot/SMTP on loopback, feed doubles), all against the
# sanitizer build.  The last line is the combined summary.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export MAILFEED_BIN="$ROOT/build/asan/mailfeed"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=99"
export LSAN_OPTIONS="suppressions=$ROOT/tests/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
passed=0
failed=0
for t in build/asan/tests/test_*; do
	[ -x "$t" ] || continue
	out=$("$t" 2>&1)
	rc=$?
	printf '%s\n' "$out" | grep -E '^\[  (PASSED|FAILED) \]|^\[  FAILED  \]|ERROR' | sed "s|^|$(basename "$t"): |"
	p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -1)
	f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -1)
	passed=$((passed + ${p:-0}))
	failed=$((failed + ${f:-0}))
	if [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ]; then
		printf '%s\n' "$out" | tail -20
		failed=$((failed + 1))
	fi
done
echo "unit: $passed passed, $failed failed"
[ "${1:-}" = "--unit-only" ] && { echo "$passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit; }
ipassed=0
ifailed=0
if [ -d tests/integration ]; then
	/usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration \
		--junitxml=build/pytest.xml 2>&1 | tail -40
	if [ -f build/pytest.xml ]; then
		eval "$(/usr/bin/python3 - <<'PY'
import xml.etree.ElementTree as ET
r = ET.parse("build/pytest.xml").getroot()
s = r if r.tag == "testsuite" else r.find("testsuite")
t, f, e, sk = (int(s.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
print("ipassed=%d ifailed=%d" % (t - f - e - sk, f + e))
PY
)"
	else
		ifailed=1
	fi
fi
passed=$((passed + ipassed))
failed=$((failed + ifailed))
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
