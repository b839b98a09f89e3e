"""Byte-level fuzzing of frame files: a damaged .npy or .npz is read correctly or refused in one
line, never a traceback, a hang or a silently wrong number.

Each case mutates a small file (seeded): a flipped or replaced byte in the header, in the data,
or in the zip directory, or a truncation. ``lamfast fit FILE`` then runs in process, under a time
limit, and must

* exit 0 with finite numbers, equal to those of the unmutated file whenever numpy still decodes
  the mutated file to the same arrays (the bytes that matter are intact); or
* exit 2 with exactly one line ``Error: ...`` on stderr, and nothing on stdout.
"""

from __future__ import annotations

import io
import json
import math
import signal
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from lamfast.cli import cli

N_CASES = 300  # per format: 600 runs, a few seconds
RNG_SEED = 12


def _frames() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((48, 6)), rng.integers(0, 3, 48)


def _npy_bytes() -> bytes:
    buf = io.BytesIO()
    np.save(buf, _frames()[0])
    return buf.getvalue()


def _npz_bytes() -> bytes:
    frames, actions = _frames()
    buf = io.BytesIO()
    np.savez_compressed(buf, frames=frames, actions=actions)
    return buf.getvalue()


def _mutate(data: bytes, rng: np.random.Generator, kind: str) -> bytes:
    b = bytearray(data)
    if kind == "truncate":
        return bytes(b[: int(rng.integers(0, len(b)))])
    if kind == "header":
        lo, hi = 0, min(len(b), 128)
    elif kind == "directory":  # the zip central directory (for .npy: the last bytes)
        start = data.rfind(b"PK\x01\x02")
        lo, hi = (start, len(b)) if start >= 0 else (len(b) - 64, len(b))
    else:  # body
        lo, hi = 128, len(b)
    for _ in range(int(rng.integers(1, 4))):
        i = int(rng.integers(lo, hi))
        b[i] = (
            int(rng.integers(0, 256)) if rng.random() < 0.5 else b[i] ^ (1 << int(rng.integers(8)))
        )
    return bytes(b)


def _decoded(path) -> dict | None:
    """What numpy decodes from the file, or None if it cannot."""
    try:
        obj = np.load(path, allow_pickle=False)
        if isinstance(obj, np.ndarray):
            return {"frames": np.array(obj)}
        with obj:
            return {k: np.array(obj[k]) for k in obj.files}
    except Exception:
        return None


def _same(a: dict | None, b: dict) -> bool:
    return (
        a is not None
        and sorted(a) == sorted(b)
        and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in b)
    )


def _run(path) -> tuple[int, str, str]:
    def hang(signum, frame):
        raise TimeoutError(f"lamfast fit {path.name} did not finish in 30 s")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(30)
    try:
        r = CliRunner().invoke(cli, ["fit", str(path), "--dz", "2", "--json", "--no-accuracy"])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception  # a traceback: the test fails with it
    return r.exit_code, r.stdout, r.stderr


NUMBERS = ("act_mse", "obs_mse", "recon", "delta_total_variance")


def _numbers(stdout: str) -> dict:
    out = json.loads(stdout)
    return {k: out[k] for k in NUMBERS if k in out} | {"spectrum": out["delta_spectrum"]}


@pytest.mark.parametrize("fmt", ["npy", "npz"])
def test_mutated_frame_files(fmt, tmp_path):
    original = _npy_bytes() if fmt == "npy" else _npz_bytes()
    ref_path = tmp_path / f"ref.{fmt}"
    ref_path.write_bytes(original)
    code, stdout, _ = _run(ref_path)
    assert code == 0
    reference, ref_arrays = _numbers(stdout), _decoded(ref_path)
    rng = np.random.default_rng(RNG_SEED)
    kinds = ("header", "body", "directory", "truncate")
    outcomes = {"read, same numbers": 0, "read, other data": 0, "refused": 0}
    wrongly_refused = []
    for i in range(N_CASES):
        path = tmp_path / f"m{i}.{fmt}"
        path.write_bytes(_mutate(original, rng, kinds[i % len(kinds)]))
        code, stdout, stderr = _run(path)
        if code == 0:
            got = _numbers(stdout)
            flat = [v for v in got.values() for v in (v if isinstance(v, list) else [v])]
            assert all(math.isfinite(v) for v in flat), (i, got)
            if _same(_decoded(path), ref_arrays):
                assert got == reference, (i, got, reference)
                outcomes["read, same numbers"] += 1
            else:
                outcomes["read, other data"] += 1
        else:
            assert code == 2, (i, code, stderr)
            assert stdout == "" and stderr.count("\n") == 1, (i, stderr)
            assert stderr.startswith("Error: ") and "Traceback" not in stderr, (i, stderr)
            outcomes["refused"] += 1
            if _same(_decoded(path), ref_arrays):
                wrongly_refused.append((i, stderr.strip()))
        path.unlink()
    # the fuzzer reaches both outcomes (a mutation model that only ever breaks files, or never
    # does, would test little)
    assert (
        outcomes["refused"] > 10
        and outcomes["read, same numbers"] + outcomes["read, other data"] > 10
    ), outcomes
    print(fmt, outcomes, "refused although numpy decodes the same arrays:", len(wrongly_refused))
    # a file numpy decodes to the very same arrays is never refused
    assert wrongly_refused == [], wrongly_refused[:5]


def test_zip_directory_mutations_are_reached():
    """The directory mutations hit the zip central directory of the .npz."""
    data = _npz_bytes()
    assert data.rfind(b"PK\x01\x02") > 0
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert sorted(z.namelist()) == ["actions.npy", "frames.npy"]
