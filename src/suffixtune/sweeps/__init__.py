"""Sweeps: a YAML grid of `suffixtune train` settings, planned and checked before any run starts."""

from .spec import PlannedRun, Sweep, load_sweep

__all__ = ["PlannedRun", "Sweep", "load_sweep"]
