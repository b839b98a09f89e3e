"""Assertions shared by the test modules."""

from __future__ import annotations

import numpy as np


def assert_bitwise(got, ref):
    """Two ``Moments`` are the same bits: count, layout, mean and covariance."""
    assert got.count == ref.count
    assert got.blocks == ref.blocks
    np.testing.assert_array_equal(got.mean, ref.mean, strict=True)
    np.testing.assert_array_equal(got.cov, ref.cov, strict=True)


def assert_range_reads_match(make_source, stride: int, spans):
    """Ranges of transitions read from fresh sources (as a Dask worker reads them) give the
    rows of the sequential stream."""
    src = make_source()
    rows = np.vstack([src.joint_rows(*c) for c in src.transitions()])
    index = src.index(stride=stride)
    for a, b in spans:
        fresh = make_source()
        got = np.vstack([fresh.joint_rows(*c) for c in fresh.read_range(index, a, b)])
        np.testing.assert_array_equal(got, rows[a:b])
