#!/usr/bin/env bash
# Issue #10, item 5: the three chapter modules whole under each planted regression of
# concurrent.futures (tests/concurrent_futures_regressions.py), one after another; seconds, exit
# status and the failed tests per regression in OUT/planted.tsv.   ci/planted_runs.sh OUT
set -u
out=$1
mkdir -p "$out"
cd "$(dirname "$0")/.."
for r in cancel map-order as-completed-order process-threads one-worker; do
  start=$(date +%s)
  HPCDEMO_REGRESSION=$r PYTHONPATH=tests timeout 900 .venv/bin/python -m pytest -p no:cacheprovider \
      -p concurrent_futures_regressions -q -rf benchmarks/test_gil.py benchmarks/test_pools.py \
      benchmarks/test_multiprocessing.py > "$out/planted-$r.log" 2>&1
  rc=$?
  end=$(date +%s)
  printf '%s\trc=%s\t%ss\tload=%s\t%s\t%s\n' "$r" "$rc" "$((end-start))" "$(cut -d' ' -f1 /proc/loadavg)" \
      "$(tail -1 "$out/planted-$r.log")" "$(grep '^FAILED' "$out/planted-$r.log" | sed 's/ - .*//' | tr '\n' ' ')" \
      >> "$out/planted.tsv"
done
