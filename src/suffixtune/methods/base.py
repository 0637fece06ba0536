"""The method protocol: how a parameter-efficient method turns token embeddings into backbone inputs."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

if TYPE_CHECKING:
    from ..tasks import Task


@dataclass
class BackboneInputs:
    """What the backbone runs on. `attention_mask=None` means rows are right-padded, so causal attention is exact."""

    inputs_embeds: torch.Tensor  # [B, T, H]
    position_ids: torch.Tensor  # [B, T]
    pool_index: torch.Tensor  # [B], position whose hidden state the head reads
    attention_mask: torch.Tensor | None = None  # [B, T]


@dataclass
class MethodConfig:
    """Base for a method's settings; subclasses add fields with `metadata={"help": ...}`, which become CLI flags."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Method(nn.Module):
    """Attaches to a frozen backbone; its own parameters are the ones that train."""

    name: ClassVar[str]
    config_class: ClassVar[type[MethodConfig]]
    default_learning_rate: ClassVar[float]

    def __init__(self, config: MethodConfig, backbone: PreTrainedModel):
        super().__init__()
        self.config = config

    @property
    def added_positions(self) -> int:
        """Sequence positions this method adds to every row (they count against the model's context)."""
        return 0

    def initialize(self, backbone: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: Task) -> None:
        """Set initial values of the trainable state (not called when loading a saved artifact)."""

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> BackboneInputs:
        raise NotImplementedError
