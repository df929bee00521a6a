#!/bin/sh
# check-length.sh — no function in src/ longer than 80 lines, except those in
# scripts/long-functions.allow (one "FILE FUNCTION" a line; the list only
# shrinks: shorten a function, then drop its line).
#
#   scripts/check-length.sh [ROOT]    exit 0, or 1 listing each new long function
#
# Length is ctags' end line minus its start line plus one, as in
# `ctags --fields=+ne --c-kinds=f` (universal-ctags).
set -eu
root=${1:-.}
limit=80
allow="$(dirname "$0")/long-functions.allow"
if ! command -v ctags >/dev/null 2>&1; then
	echo "check-length: ctags not found (scripts/install-deps.sh installs universal-ctags)" >&2
	exit 1
fi
long=$(cd "$root" && ctags --fields=+ne --c-kinds=f -o - src/*.c |
	awk -F'\t' -v limit="$limit" '{
		l = ""; e = ""
		for (i = 4; i <= NF; i++) {
			if ($i ~ /^line:/) l = substr($i, 6)
			if ($i ~ /^end:/) e = substr($i, 5)
		}
		if (l != "" && e != "" && e - l + 1 > limit) print $2, $1, e - l + 1, l
	}' | sort)
allowed=$(grep -v '^#' "$allow" 2>/dev/null | awk 'NF >= 2 {print $1, $2}' | sort -u)
bad=0
printf '%s\n' "$long" | while read -r file func lines start; do
	[ -n "$file" ] || continue
	if ! printf '%s\n' "$allowed" | grep -qxF "$file $func"; then
		echo "check-length: $file:$start: $func is $lines lines (limit $limit); split it," \
			"or, for a table, add \"$file $func\" to scripts/long-functions.allow" >&2
		echo bad
	fi
done | grep -q bad && bad=1
# Allowed functions that are short now: the line can go.
printf '%s\n' "$allowed" | while read -r file func; do
	[ -n "$file" ] || continue
	printf '%s\n' "$long" | awk -v f="$file" -v n="$func" '$1 == f && $2 == n {found = 1} END {exit !found}' ||
		echo "check-length: note: $file $func is no longer over $limit lines (or is gone); drop it from" \
			"scripts/long-functions.allow" >&2
done
exit $bad
