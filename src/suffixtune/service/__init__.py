"""`suffixtune serve`: many tasks over HTTP, with concurrent requests gathered into one model call."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

PUBLIC = {"create_app": ".app", "MicroBatcher": ".batcher", "ServiceSettings": ".settings"}

if TYPE_CHECKING:
    from .app import create_app
    from .batcher import MicroBatcher
    from .settings import ServiceSettings


def __getattr__(name: str):
    """Imported on first use, so the CLI can read the settings without loading FastAPI and the model stack."""
    if name not in PUBLIC:
        raise AttributeError(f"module 'suffixtune.service' has no attribute {name!r}")
    return getattr(importlib.import_module(PUBLIC[name], __name__), name)


__all__ = ["MicroBatcher", "ServiceSettings", "create_app"]
