"""`suffixtune serve`: many tasks over HTTP, with concurrent requests gathered into one model call."""

from .app import ServiceSettings, create_app
from .batcher import MicroBatcher

__all__ = ["MicroBatcher", "ServiceSettings", "create_app"]
