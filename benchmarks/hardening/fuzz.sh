#!/usr/bin/env bash
# The long fuzz profile: the Hypothesis properties of tests/hardening/test_fuzz.py with
# EXAMPLES generated requests per property (default 60000, two properties: 120,000 requests),
# the counts appended as JSON lines to benchmarks/results/fuzz.jsonl.
#   bash benchmarks/hardening/fuzz.sh [EXAMPLES]
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"
mkdir -p benchmarks/results
export CIBA_FUZZ_EXAMPLES="${1:-60000}"
export CIBA_FUZZ_REPORT="${CIBA_FUZZ_REPORT:-benchmarks/results/fuzz.jsonl}"
start=$(date +%s)
"$PYTHON" -m pytest tests/hardening/test_fuzz.py -q -p no:cacheprovider
echo "fuzz: ${CIBA_FUZZ_EXAMPLES} examples per property in $(( $(date +%s) - start )) s; counts in ${CIBA_FUZZ_REPORT}:"
tail -n 1 "$CIBA_FUZZ_REPORT"
