#!/usr/bin/env bash
# Issue #10's "done means": the three chapter modules run COUNT times, idle or with one core kept
# busy; one log per run and a summary line per run (exit status, seconds, load, pytest's and the
# claim summary's last lines) under OUT.
#   ci/chapter_runs.sh OUT idle 20        ci/chapter_runs.sh OUT loaded 10 busy
set -u
out=$1; label=$2; count=$3; busy=${4:-}
mkdir -p "$out"
cd "$(dirname "$0")/.."
for i in $(seq 1 "$count"); do
  hog=""
  if [ -n "$busy" ]; then python3 -c "while True: pass" & hog=$!; fi
  start=$(date +%s)
  timeout 900 .venv/bin/python -m pytest -p no:cacheprovider -q -rsf benchmarks/test_gil.py benchmarks/test_pools.py \
      benchmarks/test_multiprocessing.py > "$out/$label-$i.log" 2>&1
  rc=$?
  end=$(date +%s)
  [ -n "$hog" ] && kill "$hog"
  printf '%s\t%s\trc=%s\t%ss\tload=%s\t%s\t%s\n' "$label" "$i" "$rc" "$((end-start))" "$(cut -d' ' -f1 /proc/loadavg)" \
      "$(tail -1 "$out/$label-$i.log")" "$(grep -E '^claims:' "$out/$label-$i.log" | tail -1)" >> "$out/$label.tsv"
done
