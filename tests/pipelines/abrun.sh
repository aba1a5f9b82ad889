#!/usr/bin/env bash
# A/B two checkouts of visionray side by side, alternating, in one venv (the machine is shared and noisy:
# compare ratios within one run of this script, not absolute times):
#
#     git worktree add /tmp/old <commit>
#     bash tests/pipelines/abrun.sh /tmp/old . 2        # old vs this checkout, 2 rounds
#
# Each round runs, per tree: `visionray run bench`, then a 2-epoch quickstart without registering.
# Per-run logs go to $AB_DIR (default /tmp/ab)/<name>/log; a summary line each to $AB_DIR/summary.
set -u
old=$(cd "$1" && pwd); new=$(cd "$2" && pwd); rounds=${3:-2}
py=${PYTHON:-$new/.venv/bin/python}
out=${AB_DIR:-/tmp/ab}
mkdir -p "$out"; : > "$out/summary"
run() {  # name tree args...: the tree's pipelines package first on PYTHONPATH (driver and Ray workers)
  local name=$1 tree=$2; shift 2
  local dir=$out/$name; rm -rf "$dir"; mkdir -p "$dir"
  local start; start=$(date +%s)
  (cd "$dir" && PYTHONPATH=$tree "$py" -m pipelines "$@" > "$dir/log" 2>&1)
  echo "$name rc=$? seconds=$(( $(date +%s) - start )) $(grep -hE 'bench/train_ray_vs_torch |test accuracy' "$dir/log" | sed 's/.*\] //' | tr '\n' ' ')" >> "$out/summary"
}
for i in $(seq "$rounds"); do
  run "bench_old_$i" "$old" run bench
  run "bench_new_$i" "$new" run bench
  run "qs_old_$i" "$old" run quickstart train.epochs=2 registry.enabled=false
  run "qs_new_$i" "$new" run quickstart train.epochs=2 registry.enabled=false
done
cat "$out/summary"
