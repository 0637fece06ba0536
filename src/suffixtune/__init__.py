"""suffixtune: parameter-efficient text classification and generation with frozen causal LMs and suffix prompts."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

PUBLIC = {"Classifier": ".classifier", "Decoding": ".decoding", "Generator": ".generator", "Task": ".tasks", "get_task": ".tasks", "load_backbone": ".backbone"}

if TYPE_CHECKING:
    from .backbone import load_backbone
    from .classifier import Classifier
    from .decoding import Decoding
    from .generator import Generator
    from .tasks import Task, get_task


def __getattr__(name: str):
    """The public API, imported on first use, so `suffixtune --help` does not wait for torch."""
    if name not in PUBLIC:
        raise AttributeError(f"module 'suffixtune' has no attribute {name!r}")
    return getattr(importlib.import_module(PUBLIC[name], __name__), name)


__all__ = ["Classifier", "Decoding", "Generator", "Task", "__version__", "get_task", "load_backbone"]
