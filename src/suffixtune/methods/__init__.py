"""Registry of training methods, looked up by the name used on the CLI and stored in artifacts."""

from __future__ import annotations

import difflib

from ..errors import ConfigError
from .base import BackboneInputs, Method, MethodConfig

METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    if cls.name in METHODS:
        raise ValueError(f"method {cls.name!r} is already registered by {METHODS[cls.name].__qualname__}")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        hint = difflib.get_close_matches(name, METHODS, n=1)
        did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"unknown method {name!r}{did_you_mean}; choose from {sorted(METHODS)}")
    return METHODS[name]


from . import deep_prefix, finetune, linear_probe, lora, soft_prompt, suffix_lora  # noqa: E402,F401  register the methods

__all__ = ["METHODS", "BackboneInputs", "Method", "MethodConfig", "get_method", "register_method"]
