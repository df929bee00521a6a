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
# The integration tests run once with the state in SQLite, then the tests
# of the daemon's flow (tests/integration/both-engines.txt) once more with
# the state in PostgreSQL (MAILFEED_TEST_ENGINE=postgresql; a server of the
# harness on loopback).  MAILFEED_TEST_ENGINES=sqlite skips the second run.
engines=${MAILFEED_TEST_ENGINES:-sqlite postgresql}
rm -f build/pytest.xml build/pytest-pg.xml build/pytest-alongside.xml
# The files of tests/integration/alongside.txt run in a pytest process of
# their own beside the main SQLite pass (they mostly wait).
alongside=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' -e 's|^[[:space:]]*|tests/integration/|' \
	tests/integration/alongside.txt)
ignore=
for f in $alongside; do ignore="$ignore --ignore=$f"; done
if [ -d tests/integration ]; then
	case " $engines " in
	*" sqlite "*)
		# shellcheck disable=SC2086
		MAILFEED_TEST_ENGINE=sqlite /usr/bin/python3 -m pytest -q -p no:cacheprovider \
			$alongside --junitxml=build/pytest-alongside.xml >build/pytest-alongside.log 2>&1 &
		side=$!
		# shellcheck disable=SC2086
		MAILFEED_TEST_ENGINE=sqlite /usr/bin/python3 -m pytest -q -p no:cacheprovider \
			tests/integration $ignore --junitxml=build/pytest.xml 2>&1 | tail -40
		wait "$side"
		echo "integration tests run alongside:"
		tail -20 build/pytest-alongside.log
		[ -f build/pytest.xml ] || ifailed=$((ifailed + 1))
		[ -f build/pytest-alongside.xml ] || ifailed=$((ifailed + 1)) ;;
	esac
	case " $engines " in
	*" postgresql "*)
		files=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' -e 's|^[[:space:]]*|tests/integration/|' \
			tests/integration/both-engines.txt)
		echo "integration tests again with the state in PostgreSQL:"
		# shellcheck disable=SC2086
		MAILFEED_TEST_ENGINE=postgresql /usr/bin/python3 -m pytest -q -p no:cacheprovider \
			$files --junitxml=build/pytest-pg.xml 2>&1 | tail -40
		[ -f build/pytest-pg.xml ] || ifailed=$((ifailed + 1)) ;;
	esac
	eval "$(/usr/bin/python3 - <<'PY'
import os
import xml.etree.ElementTree as ET
p = f = 0
for path in ("build/pytest.xml", "build/pytest-alongside.xml", "build/pytest-pg.xml"):
    if not os.path.exists(path):
        continue
    r = ET.parse(path).getroot()
    s = r if r.tag == "testsuite" else r.find("testsuite")
    t, fl, e, sk = (int(s.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
    p += t - fl - e - sk
    f += fl + e
print("ipassed=%d ifailed=$((ifailed + %d))" % (p, f))
PY
)"
fi
passed=$((passed + ipassed))
failed=$((failed + ifailed))
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
