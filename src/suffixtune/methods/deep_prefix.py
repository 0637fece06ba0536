"""Deep prompts (Prefix-Tuning, Li & Liang 2021; P-Tuning v2): trainable keys and values before the text at every layer."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from torch import nn
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from ..backbone import kv_shape
from ..errors import ConfigError
from ..text_pass import output_cache
from . import register_method
from .base import BackboneInputs, Method, MethodConfig
from .soft_prompt import prompt_token_ids

if TYPE_CHECKING:
    from ..tasks import Task

logger = logging.getLogger(__name__)


@dataclass
class DeepPrefixConfig(MethodConfig):
    prompt_length: int = field(default=20, metadata={"help": "Number of trainable key/value positions P at every layer."})
    prompt_init: Literal["text", "random"] = field(
        default="text",
        metadata={"help": "Initial keys/values: the backbone's own for --prompt_text (default: the task's "
                  "instruction), as Prefix-Tuning found best; or random normal, as in P-Tuning v2. With --reparam the "
                  "MLP starts at random."},
    )
    prompt_text: str | None = field(default=None, metadata={"help": "Text for --prompt_init text."})
    reparam: bool = field(
        default=False,
        metadata={"help": "Train P embeddings through an MLP that outputs every layer's keys/values (Prefix-Tuning's "
                  "reparameterisation) instead of the keys/values themselves; its default --learning_rate is 3e-4."},
    )
    reparam_hidden_size: int = field(default=512, metadata={"help": "Hidden width of the --reparam MLP."})

    def __post_init__(self):
        if self.prompt_length < 1:
            raise ConfigError(f"--prompt_length must be at least 1, got {self.prompt_length}")


@register_method
class DeepPrefix(Method):
    """Keys and values at every layer are trained (P per layer); the text attends to them through the KV cache.

    Text positions start at P, as if the prefix were P real tokens. Layers that activation checkpointing
    recomputes drop past_key_values, so this method refuses checkpointing.
    """

    name = "deep-prefix"
    config_class: ClassVar[type[MethodConfig]] = DeepPrefixConfig
    default_learning_rate: ClassVar[float] = 3e-3
    reparam_learning_rate: ClassVar[float] = 3e-4  # E2E, 80 steps: 3e-3 diverged through the MLP (docs/results.md)
    default_standardize: ClassVar[str] = "features"  # worst of 5 seeds: SST-2 0.739 -> 0.804, SMS spam 0.937 -> 0.960
    supports_activation_checkpointing: ClassVar[bool] = False
    adds_prompt_positions: ClassVar[bool] = True
    report_order: ClassVar[int] = 30

    def __init__(self, config: DeepPrefixConfig, backbone: PreTrainedModel):
        super().__init__(config, backbone)
        self.layers, self.kv_heads, self.head_dim = kv_shape(backbone)
        flat = self.layers * 2 * self.kv_heads * self.head_dim
        if config.reparam:
            hidden = backbone.get_input_embeddings().embedding_dim
            self.embedding = nn.Parameter(torch.randn(config.prompt_length, hidden))
            self.mlp = nn.Sequential(
                nn.Linear(hidden, config.reparam_hidden_size), nn.Tanh(), nn.Linear(config.reparam_hidden_size, flat)
            )
        else:
            self.prefix = nn.Parameter(torch.zeros(self.layers, 2, self.kv_heads, config.prompt_length, self.head_dim))

    @classmethod
    def learning_rate_for(cls, config: DeepPrefixConfig) -> float:
        return cls.reparam_learning_rate if config.reparam else cls.default_learning_rate

    @property
    def added_positions(self) -> int:
        return self.config.prompt_length

    def key_values(self) -> torch.Tensor:
        """[layers, 2, kv_heads, P, head_dim]: the trained keys and values."""
        if not self.config.reparam:
            return self.prefix
        flat = self.mlp(self.embedding)  # [P, layers * 2 * kv_heads * head_dim]
        return flat.view(self.config.prompt_length, self.layers, 2, self.kv_heads, self.head_dim).permute(1, 2, 3, 0, 4)

    @torch.no_grad()
    def initialize(self, backbone: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: Task) -> None:
        config: DeepPrefixConfig = self.config
        if config.reparam:
            return
        text = config.prompt_text or task.prompt_text
        if config.prompt_init == "random" or not text:
            if config.prompt_init == "text":
                logger.warning("task %r has no prompt text and no --prompt_text was given; initialising randomly", task.name)
            self.prefix.normal_()
            return
        ids = prompt_token_ids(tokenizer, text, config.prompt_length).to(backbone.device)
        cache = output_cache(backbone.base_model(input_ids=ids[None], use_cache=True))
        for layer, entry in enumerate(cache.layers):
            self.prefix[layer, 0] = entry.keys[0].float()
            self.prefix[layer, 1] = entry.values[0].float()

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> BackboneInputs:
        inputs = super().forward(inputs_embeds, attention_mask)
        batch = inputs_embeds.shape[0]
        key_values = self.key_values().to(inputs_embeds.dtype)
        per_layer = [(kv[0].expand(batch, -1, -1, -1), kv[1].expand(batch, -1, -1, -1)) for kv in key_values]
        inputs.past_key_values = DynamicCache(per_layer)
        inputs.position_ids = inputs.position_ids + self.config.prompt_length
        return inputs
