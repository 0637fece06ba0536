"""Backbone fine-tuning baselines: all weights (`full`), or only the last k blocks and the final norm (`last-blocks`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import nn
from transformers import PreTrainedModel

from ..errors import ConfigError
from . import register_method
from .base import Method, MethodConfig

BLOCK_LISTS = ("layers", "h", "blocks", "decoder.layers")
FINAL_NORMS = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "decoder.final_layer_norm")


def find_blocks(backbone: PreTrainedModel) -> tuple[nn.ModuleList, nn.Module]:
    """The transformer blocks and the final norm of the backbone's base model."""
    base = backbone.base_model
    blocks = next((base.get_submodule(n) for n in BLOCK_LISTS if _has(base, n)), None)
    norm = next((base.get_submodule(n) for n in FINAL_NORMS if _has(base, n)), None)
    if not isinstance(blocks, nn.ModuleList) or norm is None:
        raise ConfigError(
            f"cannot find the transformer blocks and final norm of {type(base).__name__}; "
            f"--method last-blocks knows {BLOCK_LISTS} and {FINAL_NORMS}"
        )
    return blocks, norm


def _has(module: nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
    except AttributeError:
        return False
    return True


@register_method
class FullFineTuning(Method):
    """Every weight of the backbone's transformer trains (the LM head only where it is tied to the embeddings)."""

    name = "full"
    default_learning_rate: ClassVar[float] = 2e-5
    default_head_learning_rate: ClassVar[float | None] = 3e-3  # a new layer: at 2e-5 it barely moves in one epoch
    trains_backbone_weights: ClassVar[bool] = True
    modifies_backbone: ClassVar[bool] = True
    report_order: ClassVar[int] = 60

    def __init__(self, config: MethodConfig, backbone: PreTrainedModel):
        super().__init__(config, backbone)
        backbone.base_model.requires_grad_(True)


@dataclass
class LastBlocksConfig(MethodConfig):
    blocks: int = field(default=1, metadata={"help": "How many of the last transformer blocks train (with the final norm)."})

    def __post_init__(self):
        if self.blocks < 1:
            raise ConfigError(f"--blocks must be at least 1, got {self.blocks}")


@register_method
class LastBlocks(Method):
    """The last k transformer blocks and the final norm train; the artifact holds only those."""

    name = "last-blocks"
    config_class: ClassVar[type[MethodConfig]] = LastBlocksConfig
    default_learning_rate: ClassVar[float] = 5e-5
    default_head_learning_rate: ClassVar[float | None] = 3e-3
    trains_backbone_weights: ClassVar[bool] = True
    modifies_backbone: ClassVar[bool] = True
    report_order: ClassVar[int] = 50

    def __init__(self, config: LastBlocksConfig, backbone: PreTrainedModel):
        super().__init__(config, backbone)
        blocks, norm = find_blocks(backbone)
        if config.blocks > len(blocks):
            raise ConfigError(f"--blocks {config.blocks} is more than the {len(blocks)} blocks of {backbone.name_or_path}")
        for block in blocks[-config.blocks :]:
            block.requires_grad_(True)
        norm.requires_grad_(True)
