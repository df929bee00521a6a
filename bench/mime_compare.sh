#!/bin/sh
# The MIME parser comparison: the libetpan walk (the last commit that has
# it, or the one given) against the current tree, on the same corpora and
# the same generated messages.  Prints per parser the `make corpus` table
# (faults: lost text, raw MIME in the text) and the in-process parse
# figures with peak RSS.
#   bench/mime_compare.sh [COMMIT] [MESSAGES]
set -eu
cd "$(dirname "$0")/.."
here=$(pwd)
old=${1:-$(git log --format=%H -1 --grep='^MIME layer in three files')}
n=${2:-2000}
work=$(mktemp -d)
trap 'git worktree remove --force "$work/old" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git worktree add --detach "$work/old" "$old" >/dev/null 2>&1
# the same test program and properties on both sides
cp tests/unit/test_mime_corpus.c tests/unit/mime_props.h "$work/old/tests/unit/"
(cd "$work/old" && make -j2 build/asan/tests/test_mime_corpus build/rel/parse_bench >/dev/null)
make -j2 build/asan/tests/test_mime_corpus build/rel/parse_bench >/dev/null
/usr/bin/python3 bench/gen_messages.py "$work/maildir" "$n" >/dev/null
for side in old new; do
	if [ $side = old ]; then bin="$work/old/build"; label="libetpan walk ($old)"; else bin="$here/build"; label="GMime walk (working tree)"; fi
	echo "== $label"
	"$bin/asan/tests/test_mime_corpus" 2>/dev/null | grep '^mime-' || true
	for i in 1 2 3; do
		/usr/bin/time -f "peak RSS %M kB" "$bin/rel/parse_bench" "$work/maildir" 2>&1 | tr '\n' ' '
		echo
	done
done
