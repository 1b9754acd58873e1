#!/usr/bin/env bash
# Every figure of docs/reliability.md, rerun: about 15 minutes on 2 cores.
#   bash benchmarks/hardening/run.sh            (PYTHON=... to pick the interpreter)
# Needs Redis on 127.0.0.1:6379 (DB 15 is used and cleaned), PostgreSQL on 127.0.0.1:5432,
# redis-server on PATH (private servers for the fault tests) and wrk (the soak).
# Figures go to benchmarks/results/hardening/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"
OUT=benchmarks/results/hardening
mkdir -p "$OUT"
rm -f "$OUT"/tests.jsonl "$OUT"/fuzz.jsonl

echo "== the hardening tests, CI profile, with their figures"
CIBA_HARDENING_REPORT="$OUT/tests.jsonl" "$PYTHON" -m pytest tests/hardening -q -p no:cacheprovider --durations=10

echo "== the long fuzz profile"
CIBA_FUZZ_REPORT="$OUT/fuzz.jsonl" PYTHON="$PYTHON" bash benchmarks/hardening/fuzz.sh "${FUZZ_EXAMPLES:-60000}"

echo "== fail() in process and raw HTTP against gunicorn, long profiles"
CIBA_FUZZ_EXAMPLES=50000 "$PYTHON" -m pytest tests/hardening/test_fuzz_fail.py -q -p no:cacheprovider
CIBA_FUZZ_EXAMPLES=100000 CIBA_HARDENING_REPORT="$OUT/tests.jsonl" \
  "$PYTHON" -m pytest tests/hardening/test_fuzz_http.py -q -p no:cacheprovider

echo "== schemathesis, long profile"
CIBA_FUZZ_EXAMPLES="${SCHEMATHESIS_EXAMPLES:-400}" CIBA_HARDENING_REPORT="$OUT/tests.jsonl" \
  "$PYTHON" -m pytest tests/hardening/test_openapi_fuzz.py -q -p no:cacheprovider

echo "== timing of secret checks"
"$PYTHON" benchmarks/hardening/timing.py --json "$OUT/timing.json"

echo "== the soak: 5 minutes at half capacity, gunicorn + Redis"
"$PYTHON" -m benchmarks.hardening.soak --json "$OUT/soak.json"
