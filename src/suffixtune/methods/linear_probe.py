"""Linear probe: the backbone runs as is; only the classification head trains."""

from __future__ import annotations

from typing import ClassVar

from ..errors import ConfigError
from . import register_method
from .base import Method, MethodConfig


@register_method
class LinearProbe(Method):
    name = "head"
    default_learning_rate: ClassVar[float] = 3e-3
    shares_text_cache: ClassVar[bool] = True
    report_order: ClassVar[int] = 70
    supports_generation: ClassVar[bool] = False  # trains only a classification head

    @classmethod
    def check(cls, config: MethodConfig, head: str, dtype: str, activation_checkpointing: bool, training: bool) -> None:
        super().check(config, head, dtype, activation_checkpointing, training)
        if training and head != "linear":
            raise ConfigError(f"--method head with --head {head} has nothing to train; use --head linear, or --do_train False")
