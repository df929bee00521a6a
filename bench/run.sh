#!/bin/sh
# Runs every benchmark; each prints its figures next to a reference
# measured in the same run.  Never fails on speed.
set -eu
cd "$(dirname "$0")/.."
/usr/bin/python3 bench/ingest_bench.py "${BENCH_MESSAGES:-10000}"
/usr/bin/python3 bench/feed_bench.py "${BENCH_POSTS:-2000}"
/usr/bin/python3 bench/digest_bench.py 1000 "${BENCH_SUBSCRIBERS:-10000}"
/usr/bin/python3 bench/pg_bench.py "${BENCH_MESSAGES:-10000}" "${BENCH_POSTS:-2000}"
