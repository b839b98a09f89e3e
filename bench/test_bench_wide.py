"""Wide frames: fit 64 x 64 RGB (do = 12,288) in bounded memory, side by side in one run.

A seeded generator (:func:`make_wide_dataset`) writes 1e5 frames of 64 x 64 x 3 ``uint8`` with a
known low-rank part and iid pixel noise into a folder in the unpacked-``.npz`` layout
(``frames.npy``, memory-mapped, 1.2 GB, and ``actions.npy``), cached outside the repository
(``$LAMFAST_BENCH_DATA``, default ``$TMPDIR/lamfast-bench-wide``). Each case then runs in a fresh
process under ``/usr/bin/time`` (peak RSS of the process image; its anonymous memory is sampled
from ``/proc`` beside it) and is timed as a user sees it, interpreter start included:

- one sequential read of the data, the baseline of the ratios: ``FrameSource.transitions``
  (lamfast's reader: uint8 frames to float64 pairs, what every lamfast pass does first) and the
  raw bytes of the memory map (every byte touched, no conversion);
- ``lamfast fit PATH --dz 16 --method sketch --json`` (4 passes and the accuracy pass);
- scikit-learn ``PCA(n_components=16, svd_solver="randomized")`` on the frame differences held
  in memory as float32 (4.9 GB), ``IncrementalPCA.partial_fit`` over chunks of them, and
  ``dask.array.linalg.svd_compressed`` on a dask array of them (if dask is installed);
- the exact reference: the ``do x do`` second moment of the differences (float64, 1.2 GB, one
  SYRK per chunk) and its top 17 eigenpairs to machine precision (ARPACK ``eigsh``, ``tol=0``;
  LAPACK's ``eigh`` took 5 minutes a matrix at this size), of the uncentred
  ``M = E[delta delta^T]`` (what lamfast's sketch and ``svd_compressed`` find) and of the
  centred ``Cov(delta)`` (what PCA and IncrementalPCA find). Each method's top-16 subspace is
  compared with the reference of what it computes: ``sin`` of the largest principal angle.

Then 2e4 frames of 128 x 128 x 3 (do = 49,152): the read and the lamfast sketch only.

Run: ``pytest bench/test_bench_wide.py --benchmark-enable`` (off in the normal test run, like the
rest of ``bench/``), or ``python -m bench.test_bench_wide`` from the repository root, which runs
every case round-robin (``LAMFAST_BENCH_WIDE_ROUNDS``, default 3, for the reads, the sketch and
PCA; once for IncrementalPCA, dask and the reference) and writes ``results.json``, ``results.md``
and ``lamfast-info.txt`` into ``bench/results/wide-2026-12-02/`` (``--out DIR`` to change).
Sizes: ``LAMFAST_BENCH_WIDE_FRAMES`` (1e5), ``LAMFAST_BENCH_WIDE_FRAMES_128`` (2e4; 0 skips).
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "wide-2026-12-02"
DATA_ROOT = Path(
    os.environ.get("LAMFAST_BENCH_DATA") or Path(tempfile.gettempdir()) / "lamfast-bench-wide"
)
FRAMES_64 = int(float(os.environ.get("LAMFAST_BENCH_WIDE_FRAMES", "1e5")))
FRAMES_128 = int(float(os.environ.get("LAMFAST_BENCH_WIDE_FRAMES_128", "2e4")))
ROUNDS = int(os.environ.get("LAMFAST_BENCH_WIDE_ROUNDS", "3"))
DZ = 16
CHUNK = 4096  # frames per chunk in the baselines' own loops (lamfast's default FRAME_CHUNK)
IPCA_BATCH = 1024  # rows per IncrementalPCA.partial_fit
RSS_TARGET = 4 * 2**30  # the targets for lamfast at 64 x 64 RGB
WALL_TARGET = 4.0  # x one sequential read
TIME = shutil.which("time") or ("/usr/bin/time" if os.path.exists("/usr/bin/time") else None)

# ------------------------------------------------------------------------------ the data
N_SPRITES, N_ACTIONS = 16, 5
RHO, TAU, SIGMA, EFFECT = 0.9, 4.0, 6.0, 4.0


def _sprites(side: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The background (``do``) and the 16 sprite images (``16 x do``): coloured rectangles of
    side/8 to side/4 pixels at random places, one RGB colour each, scaled so that the squared
    norm of sprite ``j`` is ``300 (side / 64)^2 g_j`` (``g`` from 1 down to 1/4): per unit
    intensity, a large dim sprite and a small bright one carry the same energy."""
    y, x = np.mgrid[0:side, 0:side] / side
    base = np.stack([90 + 30 * x, 100 + 25 * y, 110 + 20 * (x + y) / 2], axis=-1)
    P = np.zeros((N_SPRITES, side, side, 3))
    lo, hi = max(side // 8, 2), max(side // 4, 3)
    gain = np.geomspace(1.0, 0.25, N_SPRITES)
    for j in range(N_SPRITES):
        h, w = rng.integers(lo, hi + 1, 2)
        r0, c0 = rng.integers(0, side - h + 1), rng.integers(0, side - w + 1)
        P[j, r0 : r0 + h, c0 : c0 + w, :] = rng.uniform(0.2, 1.0, 3)
        P[j] *= np.sqrt(300 * (side / 64) ** 2 * gain[j]) / np.linalg.norm(P[j])
    return base.reshape(-1), P.reshape(N_SPRITES, -1)


def make_wide_dataset(folder, side: int = 64, n_frames: int = 100_000, seed: int = 0) -> dict:
    """Write ``n_frames`` frames of ``side x side x 3`` uint8 and their actions (seeded).

    One trajectory: 16 coloured sprites (rectangles, :func:`_sprites`) whose intensities ``s_t``
    the 5 actions push (``s_{t+1} = 0.9 s_t + E[a_t] + 4 eta_t``; ``E`` is 5 x 16 of N(0, 4^2)
    values, action 4 a no-op with ``E[4] = 0``), on a smooth background, plus iid N(0, 6^2) pixel
    noise, rounded and clipped to uint8. So the frame differences are a rank-16 part (the sprite
    images; the action means ``P^T E[a]`` are a rank-4 part of it) plus noise of variance 72 per
    value, whose sample spectrum stays ~10x below the sprites' (a gap after the 16th eigenvalue).
    Written chunk by chunk into ``folder/frames.npy`` (memory map) and ``folder/actions.npy``;
    ``folder/meta.json`` is written last and a folder with the same parameters is reused.
    """
    folder = Path(folder)
    meta = {"side": side, "frames": n_frames, "seed": seed, "generator": 3}
    done = folder / "meta.json"
    if done.exists() and json.loads(done.read_text()).get("params") == meta:
        return json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    for stale in ("meta.json", "reference.npz"):  # the reference belongs to the old frames
        (folder / stale).unlink(missing_ok=True)
    rng = np.random.default_rng(seed)
    base, P = _sprites(side, rng)
    effect = rng.normal(0.0, EFFECT, (N_ACTIONS, N_SPRITES))
    effect[N_ACTIONS - 1] = 0.0
    actions = rng.integers(0, N_ACTIONS, n_frames)
    eta = rng.standard_normal((n_frames, N_SPRITES))
    s = np.zeros((n_frames, N_SPRITES))
    for t in range(n_frames - 1):
        s[t + 1] = RHO * s[t] + effect[actions[t]] + TAU * eta[t]
    frames = np.lib.format.open_memmap(
        folder / "frames.npy", "w+", np.uint8, (n_frames, side, side, 3)
    )
    flat = frames.reshape(n_frames, -1)
    P32, base32 = P.astype(np.float32), base.astype(np.float32)
    clipped = 0
    for a in range(0, n_frames, 1024):
        b = min(n_frames, a + 1024)
        x = rng.standard_normal((b - a, P.shape[1]), dtype=np.float32)
        x *= SIGMA
        x += s[a:b].astype(np.float32) @ P32
        x += base32
        np.rint(x, out=x)
        clipped += int(np.count_nonzero((x < 0) | (x > 255)))
        flat[a:b] = np.clip(x, 0, 255).astype(np.uint8)
    frames.flush()
    del frames, flat
    np.save(folder / "actions.npy", actions.astype(np.int64))
    info = {
        "params": meta,
        "path": str(folder),
        "do": int(P.shape[1]),
        "frames_bytes": int(n_frames * P.shape[1]),
        "clipped_fraction": clipped / (n_frames * P.shape[1]),
        "model": f"{N_SPRITES} sprites, {N_ACTIONS} actions, rho={RHO}, tau={TAU}, "
        f"effect sd={EFFECT}, pixel noise sd={SIGMA} (uint8 units)",
    }
    done.write_text(json.dumps(info, indent=1))
    return info


# ---------------------------------------------------------------- the cases (child code)
# Each runs as ``python -c CODE ARGS`` in a fresh process and prints one JSON object last.
# The cases can raise config.MAX_MOMENT_BYTES in their own process (argv[1], bytes; "0" leaves
# it). The run of 2026-12-02 needed it: FrameSource then checked the full co-moment's size
# ((2 do + da)^2 floats = 4.5 GiB at do = 12,288) when it opened frames with actions, even for
# the sketch path; the check now runs on the full-moments path only, so GUARD is 0.
_GUARD = """
import lamfast.config
if int(sys.argv[1]):
    lamfast.config.MAX_MOMENT_BYTES = int(sys.argv[1])
del sys.argv[1]
"""
GUARD = 0

_READ_LAMFAST = (
    """
import json, sys, time
t0 = time.perf_counter()
"""
    + _GUARD
    + """
import lamfast
n, total = 0, 0.0
for o, o2, _ in lamfast.FrameSource(sys.argv[1]).transitions(progress=False):
    n += o.shape[0]
    total += float(o2[:, 0].sum())
print(json.dumps({"transitions": n, "check": total, "inner_s": time.perf_counter() - t0}))
"""
)

_READ_RAW = """
import json, sys, time
import numpy as np
t0 = time.perf_counter()
F = np.load(sys.argv[1] + "/frames.npy", mmap_mode="r")
flat = F.reshape(len(F), -1)
chunk, total = int(sys.argv[2]), 0
for a in range(0, len(F), chunk):  # every byte, as uint64 words (12,288 bytes a frame)
    total += int(np.asarray(flat[a : a + chunk]).view(np.uint64).sum(dtype=np.uint64))
print(json.dumps({"frames": len(F), "check": total % 2**32, "inner_s": time.perf_counter() - t0}))
"""

# The lamfast CLI, in-process through lamfast.cli.main, with SubspaceIteration.eigenpairs
# wrapped to save the top-dz eigenvectors of M it returns (one np.save of do x 16 values).
_SKETCH = (
    """
import sys
"""
    + _GUARD
    + """
import numpy as np
from lamfast.moments import sketch
out, args = sys.argv[1], sys.argv[2:]
_orig = sketch.SubspaceIteration.eigenpairs
def eigenpairs(self, which="M", k=None):
    pairs = _orig(self, which, k)
    if which == "M":
        np.save(out, pairs.vectors)
    return pairs
sketch.SubspaceIteration.eigenpairs = eigenpairs
from lamfast.cli import main
main(args)
"""
)

# Frame differences of the whole file in memory, float32, scaled like lamfast (1/255).
_LOAD_DIFFS = """
import json, sys, time
import numpy as np
t0 = time.perf_counter()
F = np.load(sys.argv[1] + "/frames.npy", mmap_mode="r")
F = F.reshape(len(F), -1)
n, do = F.shape[0] - 1, F.shape[1]
D = np.empty((n, do), np.float32)
for a in range(0, n, 4096):
    b = min(n, a + 4096)
    np.subtract(F[a + 1 : b + 1], F[a:b], out=D[a:b], dtype=np.float32)
D *= np.float32(1 / 255)
t_load = time.perf_counter() - t0
"""

_PCA = (
    _LOAD_DIFFS
    + """
from sklearn.decomposition import PCA
pca = PCA(n_components=int(sys.argv[3]), svd_solver="randomized", random_state=0, copy=False)
pca.fit(D)
np.save(sys.argv[2], pca.components_.T.astype(np.float64))
print(json.dumps({"rows": n, "load_s": t_load, "fit_s": time.perf_counter() - t0 - t_load,
                  "iterated_power": pca.iterated_power, "n_oversamples": pca.n_oversamples,
                  "inner_s": time.perf_counter() - t0}))
"""
)

_IPCA = """
import json, sys, time
import numpy as np
t0 = time.perf_counter()
from sklearn.decomposition import IncrementalPCA
F = np.load(sys.argv[1] + "/frames.npy", mmap_mode="r")
F = F.reshape(len(F), -1)
n, k, batch = F.shape[0] - 1, int(sys.argv[3]), int(sys.argv[4])
ipca = IncrementalPCA(n_components=k, batch_size=batch)
starts = list(range(0, n, batch))
if n - starts[-1] < k and len(starts) > 1:  # a last batch needs >= k rows: join it
    starts.pop()
for i, a in enumerate(starts):
    b = starts[i + 1] if i + 1 < len(starts) else n
    D = np.subtract(F[a + 1 : b + 1], F[a:b], dtype=np.float32)
    D *= np.float32(1 / 255)
    ipca.partial_fit(D)
np.save(sys.argv[2], ipca.components_.T.astype(np.float64))
print(json.dumps({"rows": n, "batches": len(starts), "inner_s": time.perf_counter() - t0}))
"""

# svd_compressed with the work of lamfast's 4 passes: (A^T A)^3 applied to the start (2 power
# iterations; each lamfast pass applies A^T A once) and 40 columns (16 + 24 oversamples, as
# lamfast's dz + 8 reported + 16 oversamples). It does not centre: it finds the top of M.
_DASK = """
import json, sys, time
import numpy as np
t0 = time.perf_counter()
import dask, dask.array as da
F = np.load(sys.argv[1] + "/frames.npy", mmap_mode="r")
F = F.reshape(len(F), -1)
X = da.from_array(F, chunks=(4096, F.shape[1]))
D = da.diff(X.astype(np.float32), axis=0) * np.float32(1 / 255)
u, s, v = da.linalg.svd_compressed(D, k=int(sys.argv[3]), n_power_iter=2, n_oversamples=24, seed=0)
with dask.config.set(scheduler="threads"):
    s, v = dask.compute(s, v)
np.save(sys.argv[2], np.asarray(v).T.astype(np.float64))
print(json.dumps({"rows": int(D.shape[0]), "chunks": len(D.chunks[0]),
                  "n_power_iter": 2, "n_oversamples": 24, "inner_s": time.perf_counter() - t0}))
"""

# The exact reference: S = sum delta delta^T by one SYRK per chunk (float64), made symmetric,
# then the top k + 1 eigenpairs of M = S / n and of Cov = M - mu mu^T by ARPACK (eigsh, tol=0:
# to machine precision; the residuals ||M v - lambda v|| / lambda_1 are recorded).
_REFERENCE = """
import json, sys, time
import numpy as np
from scipy.linalg.blas import dsyrk
from scipy.sparse.linalg import eigsh
t0 = time.perf_counter()
F = np.load(sys.argv[1] + "/frames.npy", mmap_mode="r")
F = F.reshape(len(F), -1)
n, do, k = F.shape[0] - 1, F.shape[1], int(sys.argv[3]) + 1
S = np.zeros((do, do), order="F")
total = np.zeros(do)
for a in range(0, n, 2048):
    b = min(n, a + 2048)
    D = np.subtract(F[a + 1 : b + 1], F[a:b], dtype=np.float64)
    D *= 1 / 255
    total += D.sum(axis=0)
    S = dsyrk(1.0, D.T, beta=1.0, c=S, trans=0, lower=1, overwrite_c=1)
S /= n
mu = total / n
L = np.tril(S, -1)
S = np.tril(S)
S += L.T
del L
t_moment = time.perf_counter() - t0
out = {"rows": n, "mean": mu}
def top(A, name):
    w, V = eigsh(A, k=k, which="LA", tol=0, ncv=60, v0=np.random.default_rng(0).standard_normal(do))
    o = np.argsort(w)[::-1]
    w, V = w[o], V[:, o]
    out[name + "_values"], out[name + "_vectors"] = w, V
    out[name + "_residual"] = np.linalg.norm(A @ V - V * w, axis=0) / w[0]
top(S, "M")
S -= np.outer(mu, mu)
top(S, "C")
np.savez(sys.argv[2], **out)
print(json.dumps({"rows": n, "moment_s": t_moment, "eigsh_s": time.perf_counter() - t0 - t_moment,
                  "mean_sq": float(mu @ mu), "inner_s": time.perf_counter() - t0,
                  "max_residual": float(max(out["M_residual"].max(), out["C_residual"].max()))}))
"""


def _lamfast_cmd(data) -> list[str]:
    return ["fit", str(data), "--dz", str(DZ), "--method", "sketch", "--json"]


CASES = {
    # name: (code, args(data, vectors_out), the reference it is compared with)
    "read: FrameSource.transitions": (_READ_LAMFAST, lambda d, v: [str(GUARD), str(d)], None),
    "read: raw bytes (np.load mmap)": (_READ_RAW, lambda d, v: [str(d), str(CHUNK)], None),
    "lamfast fit --method sketch": (
        _SKETCH, lambda d, v: [str(GUARD), str(v), *_lamfast_cmd(d)], "M"),
    "lamfast fit --method sketch --actions none": (
        _SKETCH, lambda d, v: ["0", str(v), *_lamfast_cmd(d), "--actions", "none"], "M"),
    "sklearn PCA randomized (float32 in memory)": (
        _PCA, lambda d, v: [str(d), str(v), str(DZ)], "C"),
    "sklearn IncrementalPCA partial_fit": (
        _IPCA, lambda d, v: [str(d), str(v), str(DZ), str(IPCA_BATCH)], "C"),
    "dask svd_compressed": (_DASK, lambda d, v: [str(d), str(v), str(DZ)], "M"),
}  # fmt: skip
REPEATED = (
    "read: FrameSource.transitions",
    "read: raw bytes (np.load mmap)",
    "lamfast fit --method sketch",
    "sklearn PCA randomized (float32 in memory)",
)


# ------------------------------------------------------------------------ measurement
def _status(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmHWM", "RssAnon", "RssFile", "VmRSS"):
                    out[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return out


_VMSTAT = ("pgfault", "compact_stall", "thp_fault_alloc", "thp_fault_fallback")


def _vmstat() -> dict:
    try:
        with open("/proc/vmstat") as f:
            return {k: int(v) for k, v in (ln.split() for ln in f) if k in _VMSTAT}
    except OSError:
        return {}


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                kids = [int(c) for c in f.read().split()]
        except OSError:
            kids = []
        found += kids
        todo += kids
    return found


def lamfast_fingerprint() -> str:
    """sha256 of the lamfast sources as they are now: the checkout is edited while a run goes
    on, and every case imports lamfast afresh, so each record says which code it ran."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted((ROOT / "lamfast").rglob("*.py")):
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=ROOT, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "(git unavailable)"


def run_child(code: str, args: list[str], workdir: Path) -> dict:
    """Run ``python -c code args`` in a fresh process; wall time (interpreter start included),
    peak RSS (``/usr/bin/time``'s maximum resident set of the process, which counts the touched
    pages of memory-mapped files; without ``time``, the largest ``VmHWM`` sampled), the peak of
    its anonymous memory sampled every 0.2 s from ``/proc``, and the JSON it printed last."""
    workdir.mkdir(parents=True, exist_ok=True)
    tfile, out, err = workdir / "time.txt", workdir / "stdout.txt", workdir / "stderr.txt"
    cmd = [sys.executable, "-c", code, *args]
    if TIME:
        cmd = [TIME, "-f", "%e %M %U %S", "-o", str(tfile), *cmd]
    peak = {"anon": 0, "file": 0, "hwm": 0}
    vm0, load0, code_before = _vmstat(), os.getloadavg()[0], lamfast_fingerprint()
    with open(out, "w") as fo, open(err, "w") as fe:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, cwd=ROOT)
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                for pid in [proc.pid, *_descendants(proc.pid)]:
                    st = _status(pid)
                    peak["anon"] = max(peak["anon"], st.get("RssAnon", 0))
                    peak["file"] = max(peak["file"], st.get("RssFile", 0))
                    peak["hwm"] = max(peak["hwm"], st.get("VmHWM", 0))
                stop.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        rc = proc.wait()
        wall = time.perf_counter() - start
        stop.set()
        sampler.join()
    vm1 = _vmstat()
    if rc != 0:
        raise RuntimeError(
            f"case failed (exit {rc}): {' '.join(cmd[:2] + ['<code>'] + list(args))}\n"
            + err.read_text()[-4000:]
        )
    rec = {
        "wall_s": wall,
        "peak_anon_bytes_sampled": peak["anon"],
        "peak_file_bytes_sampled": peak["file"],
        "load_before": load0,
        "lamfast_sources": code_before,
        "lamfast_sources_changed_during_case": lamfast_fingerprint() != code_before,
        # machine-wide counters over the run (other processes count too): direct compaction
        # stalls and transparent-huge-page faults show the kernel time of fresh memory
        "vmstat_delta": {k: vm1.get(k, 0) - vm0.get(k, 0) for k in vm1},
    }
    if TIME and tfile.exists():
        _, rss, user, system = tfile.read_text().split()[-4:]
        rec["peak_rss_bytes"] = int(rss) * 1024
        rec["peak_rss_source"] = "/usr/bin/time %M"
        rec["user_s"], rec["sys_s"] = float(user), float(system)
    else:
        rec["peak_rss_bytes"] = peak["hwm"]
        rec["peak_rss_source"] = "VmHWM sampled"
    lines = [ln for ln in out.read_text().splitlines() if ln.strip()]
    text = out.read_text()
    try:  # lamfast fit --json prints one (indented) object; the others one line
        rec["child"] = json.loads(text[text.index("{") :]) if text.strip() else {}
    except ValueError:
        rec["child"] = json.loads(lines[-1])
    return rec


def sin_max(V: np.ndarray, R: np.ndarray) -> float:
    """``sin`` of the largest principal angle between span(V) and span(R) (R orthonormal)."""
    Q, _ = np.linalg.qr(V)
    return float(np.linalg.norm(Q - R @ (R.T @ Q), 2))


def reference(data: Path, workdir: Path) -> dict:
    """The exact top-16 subspaces (cached beside the data as ``reference.npz``)."""
    path, run = Path(data) / "reference.npz", Path(data) / "reference-run.json"
    if not path.exists():
        rec = run_child(_REFERENCE, [str(data), str(path), str(DZ)], workdir / "reference")
        run.write_text(json.dumps(rec | {"when": f"{datetime.datetime.now(datetime.UTC):%c} UTC"}))
        rec["cached"] = False
    else:
        rec = json.loads(run.read_text()) | {"cached": True} if run.exists() else None
    z = np.load(path)
    out = {k: z[k] for k in z.files}
    out["run"] = rec
    return out


def lamfast_info() -> str:
    return subprocess.run(
        [sys.executable, "-c", "from lamfast.cli import main; main()", "info"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout  # fmt: skip


def _summary(name: str, runs: list[dict], ref: dict | None, vec: Path | None) -> dict:
    walls = [r["wall_s"] for r in runs]
    s = {
        "case": name,
        "rounds": len(runs),
        "wall_s_median": statistics.median(walls),
        "wall_s_all": walls,
        "peak_rss_bytes_median": statistics.median(r["peak_rss_bytes"] for r in runs),
        "peak_rss_bytes_max": max(r["peak_rss_bytes"] for r in runs),
        "peak_anon_bytes_sampled_max": max(r["peak_anon_bytes_sampled"] for r in runs),
        "peak_file_bytes_sampled_max": max(r.get("peak_file_bytes_sampled", 0) for r in runs),
        "user_s_median": statistics.median(r.get("user_s", float("nan")) for r in runs),
        "sys_s_median": statistics.median(r.get("sys_s", float("nan")) for r in runs),
        "child": runs[-1]["child"],
        "peak_rss_source": runs[-1]["peak_rss_source"],
        "runs": [{k: v for k, v in r.items() if k not in ("child", "vectors")} for r in runs],
    }
    kind = CASES.get(name, (None, None, None))[2]
    if ref is not None and kind and vec is not None and vec.exists():
        V = np.load(vec)
        s["compared_with"] = "uncentred M" if kind == "M" else "centred Cov"
        s["sin_max_vs_like"] = sin_max(V, ref[f"{kind}_vectors"][:, :DZ])
        other = "C" if kind == "M" else "M"
        s["sin_max_vs_other"] = sin_max(V, ref[f"{other}_vectors"][:, :DZ])
    return s


# ------------------------------------------------------------------------- the whole run
def run_all(out: Path = RESULTS, rounds: int = ROUNDS) -> dict:
    """Every case, round-robin where repeated; writes results.json, results.md, lamfast-info.txt."""
    out.mkdir(parents=True, exist_ok=True)
    DATA_ROOT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="wide-run-", dir=DATA_ROOT))
    stamp = lambda: datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")  # noqa: E731
    res = {"started": stamp(), "load_start": os.getloadavg(), "info": lamfast_info()}
    res["git_head_start"] = _git("rev-parse", "HEAD")
    res["git_dirty_lamfast_start"] = _git("status", "--porcelain", "lamfast")
    res["lamfast_sources_start"] = lamfast_fingerprint()
    from lamfast.benchmarks import environment

    res["environment"] = environment()
    (out / "lamfast-info.txt").write_text(res["info"])
    t0 = time.perf_counter()
    d64 = make_wide_dataset(DATA_ROOT / f"rgb64-{FRAMES_64}", 64, FRAMES_64)
    res["data_64"] = d64 | {"generate_s": time.perf_counter() - t0}
    print(f"[{stamp()}] data 64: {d64['path']}", flush=True)
    ref = reference(Path(d64["path"]), work)
    res["reference_64"] = {
        "run": ref["run"],
        "M_values": ref["M_values"].tolist(),
        "C_values": ref["C_values"].tolist(),
        "M_gap_16_17": float(ref["M_values"][DZ] / ref["M_values"][DZ - 1]),
        "C_gap_16_17": float(ref["C_values"][DZ] / ref["C_values"][DZ - 1]),
        "sin_max_M_vs_C": sin_max(ref["M_vectors"][:, :DZ], ref["C_vectors"][:, :DZ]),
        "max_residual": float(max(ref["M_residual"].max(), ref["C_residual"].max())),
    }
    print(f"[{stamp()}] reference done", flush=True)
    runs: dict[str, list] = {name: [] for name in CASES}
    order = [(r, n) for r in range(rounds) for n in REPEATED] + [
        (0, n) for n in CASES if n not in REPEATED
    ]
    for r, name in order:
        if name == "dask svd_compressed" and not _has("dask"):
            continue
        code, args, _ = CASES[name]
        vec = work / f"{_slug(name)}-{r}.npy"
        rec = run_child(code, args(d64["path"], vec), work / f"{_slug(name)}-{r}")
        rec["vectors"] = str(vec)
        runs[name].append(rec)
        print(f"[{stamp()}] {name} round {r + 1}: {rec['wall_s']:.1f} s, "
              f"{rec['peak_rss_bytes'] / 2**30:.2f} GiB", flush=True)  # fmt: skip
    cases = []
    for name, rr in runs.items():
        if rr:
            cases.append(_summary(name, rr, ref, Path(rr[-1]["vectors"])))
            vs = [np.load(x["vectors"]) for x in rr if Path(x["vectors"]).exists()]
            if len(vs) > 1:
                cases[-1]["vectors_bitwise_equal_across_rounds"] = all(
                    np.array_equal(vs[0], v) for v in vs[1:]
                )
    _ratios(cases)
    res["cases_64"] = cases
    if FRAMES_128:
        t0 = time.perf_counter()
        d128 = make_wide_dataset(DATA_ROOT / f"rgb128-{FRAMES_128}", 128, FRAMES_128)
        res["data_128"] = d128 | {"generate_s": time.perf_counter() - t0}
        runs128: dict[str, list] = {"read: FrameSource.transitions": [],
                                    "lamfast fit --method sketch": []}  # fmt: skip
        for r in range(rounds):
            for name in runs128:
                code, args, _ = CASES[name]
                vec = work / f"128-{_slug(name)}-{r}.npy"
                rec = run_child(code, args(d128["path"], vec), work / f"128-{_slug(name)}-{r}")
                runs128[name].append(rec)
                print(f"[{stamp()}] 128: {name} round {r + 1}: {rec['wall_s']:.1f} s, "
                      f"{rec['peak_rss_bytes'] / 2**30:.2f} GiB", flush=True)  # fmt: skip
        c128 = [_summary(n, rr, None, None) for n, rr in runs128.items()]
        _ratios(c128)
        res["cases_128"] = c128
    res["finished"], res["load_end"] = stamp(), os.getloadavg()
    res["git_head_end"] = _git("rev-parse", "HEAD")
    res["lamfast_sources_end"] = lamfast_fingerprint()
    seen = {
        r["lamfast_sources"]
        for c in res["cases_64"] + res.get("cases_128", [])
        for r in c["runs"]
        if c["case"].startswith(("lamfast", "read: FrameSource"))
    }
    res["lamfast_sources_seen"] = sorted(seen)
    res["lamfast_changed_during_run"] = len(seen | {res["lamfast_sources_end"]}) > 1
    res["targets"] = _targets(res)
    (out / "results.json").write_text(json.dumps(res, indent=1, default=_plain))
    (out / "results.md").write_text(markdown(res))
    shutil.rmtree(work, ignore_errors=True)
    return res


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")[:40]


def _plain(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(type(x))


def _ratios(cases: list[dict]) -> None:
    base = {c["case"]: c["wall_s_median"] for c in cases if c["case"].startswith("read:")}
    for c in cases:
        for key, name in (("x_read_lamfast", "read: FrameSource.transitions"),
                          ("x_read_raw", "read: raw bytes (np.load mmap)")):  # fmt: skip
            if name in base:
                c[key] = c["wall_s_median"] / base[name]


def _targets(res: dict) -> dict:
    sk = next(c for c in res["cases_64"] if c["case"] == "lamfast fit --method sketch")
    t = {
        "rss_64_bytes": sk["peak_rss_bytes_max"],
        "rss_64_met": sk["peak_rss_bytes_max"] <= RSS_TARGET,
        "wall_64_x_read_lamfast": sk.get("x_read_lamfast"),
        "wall_64_met_vs_lamfast_read": (sk.get("x_read_lamfast") or 1e9) <= WALL_TARGET,
        "wall_64_x_read_raw": sk.get("x_read_raw"),
        "wall_64_met_vs_raw_read": (sk.get("x_read_raw") or 1e9) <= WALL_TARGET,
    }
    for c in res.get("cases_128", []):
        if c["case"] == "lamfast fit --method sketch":
            t["rss_128_bytes"] = c["peak_rss_bytes_max"]
            t["rss_128_met"] = c["peak_rss_bytes_max"] <= RSS_TARGET
            t["wall_128_x_read_lamfast"] = c.get("x_read_lamfast")
    return t


def _fmt_err(c: dict) -> str:
    if "sin_max_vs_like" not in c:
        return ""
    return f"{c['sin_max_vs_like']:.1e} ({c['compared_with']}; other {c['sin_max_vs_other']:.1e})"


def _table(cases: list[dict]) -> list[str]:
    rows = [
        "| case | wall (median) | rounds | × FrameSource read | × raw read | CPU user + sys | "
        "peak RSS (max of rounds) | anon + file-backed (sampled) | sin θ_max vs exact top-16 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        xr = f"{c['x_read_raw']:.1f}" if "x_read_raw" in c else ""
        xl = f"{c['x_read_lamfast']:.2f}" if "x_read_lamfast" in c else ""
        rows.append(
            f"| {c['case']} | {c['wall_s_median']:.1f} s | {c['rounds']} | {xl} | {xr} | "
            f"{c['user_s_median']:.0f} + {c['sys_s_median']:.0f} s | "
            f"{c['peak_rss_bytes_max'] / 2**30:.2f} GiB | "
            f"{c['peak_anon_bytes_sampled_max'] / 2**30:.2f} + "
            f"{c['peak_file_bytes_sampled_max'] / 2**30:.2f} GiB | {_fmt_err(c)} |"
        )
    return rows


def markdown(res: dict) -> str:
    d, r = res["data_64"], res["reference_64"]
    lines = [
        f"# Wide frames: the sketch path ({res['started']} to {res['finished']})",
        "",
        f"lamfast at commit {res['git_head_start'][:7]}"
        + (" with uncommitted changes" if res["git_dirty_lamfast_start"] else "")
        + (
            "; THE LAMFAST SOURCES CHANGED DURING THE RUN (see lamfast_sources in results.json)"
            if res["lamfast_changed_during_run"]
            else "; its sources did not change during the run"
        )
        + ".",
        "",
        f"64 x 64 x 3 uint8, {d['params']['frames']} frames (do = {d['do']}, "
        f"{d['frames_bytes'] / 2**30:.2f} GiB): {d['model']}.",
        "",
        *_table(res["cases_64"]),
        "",
        f"Exact reference (do x do float64 second moment by SYRK, top 17 by ARPACK, tol=0; "
        f"largest residual {r['max_residual']:.1e} lambda_1): "
        + (
            f"{r['run']['wall_s']:.0f} s, peak RSS {r['run']['peak_rss_bytes'] / 2**30:.2f} GiB"
            + (f" (cached: measured {r['run'].get('when')}); " if r["run"]["cached"] else "; ")
            if r["run"]
            else "cached from an earlier run; "
        )
        + f"lambda_17 / lambda_16 = {r['M_gap_16_17']:.3f} (M), {r['C_gap_16_17']:.3f} (Cov); "
        f"sin θ_max between the top-16 of M and of Cov: {r['sin_max_M_vs_C']:.1e}.",
    ]
    if "cases_128" in res:
        d2 = res["data_128"]
        lines += [
            "",
            f"128 x 128 x 3 uint8, {d2['params']['frames']} frames (do = {d2['do']}, "
            f"{d2['frames_bytes'] / 2**30:.2f} GiB):",
            "",
            *_table(res["cases_128"]),
        ]
    t = res["targets"]
    lines += [
        "",
        f"Targets (lamfast, 64 x 64 RGB): peak RSS <= 4 GiB: "
        f"{'met' if t['rss_64_met'] else 'MISSED'} ({t['rss_64_bytes'] / 2**30:.2f} GiB); "
        f"wall <= 4x one read: vs FrameSource read "
        f"{'met' if t['wall_64_met_vs_lamfast_read'] else 'MISSED'} "
        f"({t['wall_64_x_read_lamfast']:.2f}x), vs raw bytes "
        f"{'met' if t['wall_64_met_vs_raw_read'] else 'MISSED'} ({t['wall_64_x_read_raw']:.1f}x).",
        "",
        "Load average: " + f"{res['load_start'][0]:.2f} at the start, {res['load_end'][0]:.2f} "
        "at the end.",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ pytest
_state: dict = {"runs": {}}


@pytest.fixture(scope="module")
def wide64():
    if "d64" not in _state:
        _state["d64"] = make_wide_dataset(DATA_ROOT / f"rgb64-{FRAMES_64}", 64, FRAMES_64)
        DATA_ROOT.mkdir(parents=True, exist_ok=True)
        _state["work"] = Path(tempfile.mkdtemp(prefix="wide-pytest-", dir=DATA_ROOT))
        _state["ref"] = reference(Path(_state["d64"]["path"]), _state["work"])
    return _state


def _bench_case(benchmark, st, name, data, rounds, prefix=""):
    from lamfast.benchmarks import environment

    code, args, kind = CASES[name]
    recs = []

    def once():
        vec = st["work"] / f"{prefix}{_slug(name)}-{len(recs)}.npy"
        recs.append(run_child(code, args(data, vec), st["work"] / f"{prefix}{_slug(name)}"))
        recs[-1]["vectors"] = str(vec)

    benchmark.extra_info.update(environment())
    benchmark.pedantic(once, rounds=rounds, iterations=1, warmup_rounds=0)
    s = _summary(name, recs, st.get("ref") if not prefix else None, Path(recs[-1]["vectors"]))
    st["runs"][prefix + name] = s
    base = st["runs"].get(prefix + "read: FrameSource.transitions")
    if base is not None:  # the baseline, measured earlier in the same run
        s["x_read_lamfast"] = s["wall_s_median"] / base["wall_s_median"]
    benchmark.extra_info.update({k: v for k, v in s.items() if k != "child"})
    return s


@pytest.mark.parametrize("case", list(CASES))
def test_wide_64(benchmark, wide64, case):
    if case == "dask svd_compressed" and not _has("dask"):
        pytest.skip("dask missing")
    if "sklearn" in case and not _has("sklearn"):
        pytest.skip("scikit-learn missing")
    benchmark.group = f"wide frames: {FRAMES_64} frames of 64x64x3 uint8, top-{DZ}"
    rounds = ROUNDS if case in REPEATED else 1
    s = _bench_case(benchmark, wide64, case, wide64["d64"]["path"], rounds)
    if case == "lamfast fit --method sketch":
        assert s["peak_rss_bytes_max"] <= RSS_TARGET, "the sketch path must stay within 4 GiB"
        ref = wide64["ref"]["M_values"]
        if ref[DZ] < 0.5 * ref[DZ - 1]:  # a gap after the 16th eigenvalue (not at small sizes)
            assert s["sin_max_vs_like"] < 1e-2


@pytest.mark.skipif(not FRAMES_128, reason="LAMFAST_BENCH_WIDE_FRAMES_128=0")
@pytest.mark.parametrize("case", ["read: FrameSource.transitions", "lamfast fit --method sketch"])
def test_wide_128(benchmark, wide64, case):
    benchmark.group = f"wide frames: {FRAMES_128} frames of 128x128x3 uint8, sketch"
    d = make_wide_dataset(DATA_ROOT / f"rgb128-{FRAMES_128}", 128, FRAMES_128)
    _bench_case(benchmark, wide64, case, d["path"], ROUNDS, prefix="128 ")


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--rounds", type=int, default=ROUNDS)
    a = p.parse_args()
    result = run_all(a.out, a.rounds)
    print((a.out / "results.md").read_text())
