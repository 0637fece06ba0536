"""The method protocol: how a training method turns token embeddings into backbone inputs, and what it trains."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from transformers import Cache, PreTrainedModel, PreTrainedTokenizerBase

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..tasks import Task


@dataclass
class BackboneInputs:
    """What the backbone runs on, always right-padded: causal attention alone is exact, so no mask is needed.

    Positions 0..pool_index of each row are real (text and any prompt vectors); the rest is padding.
    """

    inputs_embeds: torch.Tensor  # [B, T, H]
    position_ids: torch.Tensor  # [B, T]
    pool_index: torch.Tensor  # [B], last real position: the hidden state the head reads
    past_key_values: Cache | None = None  # per-layer keys/values every row attends to (deep prompts)


@dataclass
class MethodConfig:
    """Base for a method's settings; subclasses add fields with `metadata={"help": ...}`, which become CLI flags."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class NoOptions(MethodConfig):
    """For methods without settings of their own."""


class Method(nn.Module):
    """Attaches to a frozen backbone and decides what trains: its own parameters, or backbone weights it unfreezes.

    `__init__` makes the trainable state (also when an artifact is loaded); `initialize` gives it starting values.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[MethodConfig]] = NoOptions
    default_learning_rate: ClassVar[float]
    default_head_learning_rate: ClassVar[float | None] = None  # None: the head trains at the method's rate
    default_standardize: ClassVar[str] = "none"  # --standardize when not given
    supports_activation_checkpointing: ClassVar[bool] = True
    trains_backbone_weights: ClassVar[bool] = False
    modifies_backbone: ClassVar[bool] = False  # changes the backbone it is built on (its weights or its modules)
    shares_text_cache: ClassVar[bool] = False  # adds nothing before or inside the text, so texts' caches serve it
    has_prompt_vectors: ClassVar[bool] = False  # trains `prompt_vectors`, which inspection compares with the vocabulary
    adds_prompt_positions: ClassVar[bool] = False  # its `added_positions` are a prompt length
    report_order: ClassVar[int]  # its place in report tables and figures, lowest first
    adapts_suffix: ClassVar[bool] = False  # changes the backbone's weights at its suffix positions (`adapting`)
    supports_generation: ClassVar[bool] = True  # can train a Generator (the LM head, a target after the source)

    def __init__(self, config: MethodConfig, backbone: PreTrainedModel):
        super().__init__()
        self.config = config

    @classmethod
    def learning_rate_for(cls, config: MethodConfig) -> float:
        """--learning_rate when none is given, for these settings of the method."""
        return cls.default_learning_rate

    @classmethod
    def check(cls, config: MethodConfig, head: str, dtype: str, activation_checkpointing: bool, training: bool) -> None:
        """Refuse settings this method cannot train with, before any model loads."""
        if activation_checkpointing and not cls.supports_activation_checkpointing:
            raise ConfigError(
                f"--method {cls.name} cannot train with activation (gradient) checkpointing: checkpointed layers "
                "drop the per-layer prompt; remove --gradient_checkpointing, or use --method suffix or prefix"
            )
        if training and cls.trains_backbone_weights and dtype != "float32":
            raise ConfigError(
                f"--method {cls.name} updates backbone weights, which must be float32 for the optimizer; "
                "use --dtype float32 with --bf16 (mixed precision) instead of --dtype " + dtype
            )

    @property
    def added_positions(self) -> int:
        """Positions this method takes from the model's context for every row."""
        return 0

    @classmethod
    def facts(cls) -> dict[str, Any]:
        """What reports need to know of the method, stored in every run's record."""
        return {"has_prompt_vectors": cls.has_prompt_vectors, "adds_prompt_positions": cls.adds_prompt_positions,
                "report_order": cls.report_order}

    def prompt_vectors(self) -> nn.Parameter | None:
        """[P, H] trained vectors in the input embedding space, for methods with `has_prompt_vectors`; None: none."""
        return None

    def suffix_embeddings(self) -> torch.Tensor | None:
        """[P, H] vectors this method places after the text, for methods that share the text cache; None: none."""
        return None

    @contextlib.contextmanager
    def adapting(self, inputs: BackboneInputs | None = None) -> Iterator[None]:
        """Backbone changes this method makes while a call runs: for a full pass over `inputs`, or with None for a
        call over only this method's suffix positions. Outside it the backbone is the frozen model."""
        yield

    def initialize(self, backbone: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: Task) -> None:
        """Set starting values of the trainable state (not called when loading a saved artifact)."""

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> BackboneInputs:
        return place_prompt(inputs_embeds, attention_mask, inputs_embeds.new_empty(0, inputs_embeds.shape[-1]), False)


def place_prompt(embeds: torch.Tensor, mask: torch.Tensor, prompt: torch.Tensor, before_text: bool) -> BackboneInputs:
    """Put `prompt` [P, H] (or one per row, [B, P, H]) right before or right after each row's real tokens, in one
    scatter for the whole batch.

    Works for left or right padding: the output is always right-padded, so every row's positions are
    0..len+P-1 and causal attention alone is exact (no mask, which keeps the fast attention kernels).
    With P = 0 it only moves left-padded rows to the right.
    """
    batch, length, hidden = embeds.shape
    prompt_length = prompt.shape[-2]
    mask = mask.bool()
    lengths = mask.sum(1, keepdim=True)  # [B, 1]
    real_rank = mask.cumsum(1) - 1  # [B, L], order among real tokens
    pad_rank = (~mask).cumsum(1) - 1  # [B, L], order among pads
    offset = prompt_length if before_text else 0
    token_dest = torch.where(mask, real_rank + offset, lengths + prompt_length + pad_rank)  # [B, L]
    steps = torch.arange(prompt_length, device=embeds.device)
    prompt_dest = steps.expand(batch, -1) if before_text else lengths + steps  # [B, P]
    dest = torch.cat([token_dest, prompt_dest], 1)  # [B, L+P]
    source = torch.cat([embeds, prompt.to(embeds.dtype).expand(batch, -1, -1)], 1)  # [B, L+P, H]
    placed = torch.empty_like(source).scatter_(1, dest.unsqueeze(-1).expand(-1, -1, hidden), source)
    positions = torch.arange(length + prompt_length, device=embeds.device).expand(batch, -1)
    return BackboneInputs(placed, positions, pool_index=lengths.squeeze(1) + prompt_length - 1)
