#!/usr/bin/env bash
# Interleaved runs of bench/test_bench_distributed.py (one round per configuration per cycle), so
# that drifting load on a shared machine hits every configuration alike; medians are taken over
# the cycles. Usage: bench/run_dask_scaling.sh OUTDIR [CYCLES]
set -u
out=${1:?output directory}; cycles=${2:-3}
mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
for c in $(seq 1 "$cycles"); do
  for k in "single_process and not free" "free_blas" "dask and 1-worker" "dask and 2-workers"; do
    name=$(echo "$k" | tr -c 'a-z0-9-' '_')
    LAMFAST_BENCH_ROUNDS=1 python -m pytest "$here/test_bench_distributed.py" -q -p no:cacheprovider \
      --benchmark-enable -k "$k" --benchmark-json="$out/${name}_cycle$c.json" > "$out/${name}_cycle$c.log" 2>&1
    echo "cycle $c $k: exit $?"
  done
done
python - "$out" <<'PY'
import glob, json, statistics, sys
rows, n = {}, 1e7
for path in sorted(glob.glob(f"{sys.argv[1]}/*.json")):
    for b in json.load(open(path))["benchmarks"]:
        rows.setdefault(b["name"], []).append(b["stats"]["median"])
        n = b["extra_info"].get("rows", 1e7)
base = statistics.median(rows.get("test_single_process", [float("nan")]))
for name, ts in rows.items():
    m = statistics.median(ts)
    print(f"{name:28s} runs={len(ts)} median={m:8.2f} s  rows/s={n / m:12,.0f}  "
          f"speed-up vs single={base / m:5.2f}  all={['%.1f' % t for t in ts]}")
PY
