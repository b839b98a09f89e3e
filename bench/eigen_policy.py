"""Measure the crossover behind ``top_eigh(method="auto")`` (config.EIGH_KRYLOV_*).

Times every method on the benchmark spectra for a range of d at k = 16 and k = 4 (medians of 3)
and writes bench/results/eigen_policy.json. Run: ``python -m bench.eigen_policy``.
"""

from __future__ import annotations

import json
import os
import sys

from lamfast.benchmarks import eigen_matrix, environment, median_time
from lamfast.moments.eigen import top_eigh

METHODS = ("krylov", "subset", "arpack", "dense")


def main(dims=(256, 512, 1024, 2048), ks=(4, 16), out="bench/results/eigen_policy.json"):
    rows = []
    for d in dims:
        for kind in ("sampled", "population"):
            C = eigen_matrix(d, kind)
            for k in ks:
                for method in METHODS:
                    reps = 1 if (method == "dense" and d >= 4096) else 3
                    t = median_time(lambda: top_eigh(C, k, method=method), reps)  # noqa: B023
                    rows.append(dict(d=d, kind=kind, k=k, method=method, seconds=t))
                    print(d, kind, k, method, f"{t:.4f}", file=sys.stderr, flush=True)
    best = {}
    for r in rows:
        key = f"d={r['d']} k={r['k']} {r['kind']}"
        if key not in best or r["seconds"] < best[key][1]:
            best[key] = (r["method"], r["seconds"])
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".tmp", "w") as f:
        json.dump({"environment": environment(), "rows": rows, "best": best}, f, indent=1)
    os.replace(out + ".tmp", out)
    for key, (method, t) in best.items():
        print(f"{key:<28} {method:<8} {t:.4f} s")


if __name__ == "__main__":
    main()
