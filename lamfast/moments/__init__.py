"""The moments stage: ``Moments``, block accumulation, the fixed merge tree, the top-k eigensolver,
checkpoints, the block executor (in process or on Dask), cleaning projections, PSD algebra.

Everything above this stage consumes :class:`Moments`; nothing here knows where rows come from.
"""

from .accumulate import BlockAccumulator, moments_from_rows
from .core import Blocks, MergeTree, Moments, block_moments
from .eigen import top_eigh

__all__ = [
    "BlockAccumulator",
    "Blocks",
    "MergeTree",
    "Moments",
    "block_moments",
    "moments_from_rows",
    "top_eigh",
]
