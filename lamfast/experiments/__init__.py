"""The experiments stage: the paper's panels as data, grid points, reproduce, sweep, the report and
figures, the grid-world study, and the frame-fitting pipeline.
"""

from .panels import PANELS, Panel, RunOptions, panel_names
from .points import Point, compute_points, default_solver, panel_points
from .runner import run_points

__all__ = [
    "PANELS",
    "Panel",
    "Point",
    "RunOptions",
    "compute_points",
    "default_solver",
    "panel_names",
    "panel_points",
    "run_points",
]
