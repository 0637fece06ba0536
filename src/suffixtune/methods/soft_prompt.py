"""Soft prompts: P trainable embeddings placed after the text (`suffix`) or before it (`prefix`, Lester et al.)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..errors import ConfigError
from . import register_method
from .base import BackboneInputs, Method, MethodConfig, place_prompt

if TYPE_CHECKING:
    from ..tasks import Task

logger = logging.getLogger(__name__)


@dataclass
class SoftPromptConfig(MethodConfig):
    prompt_length: int = field(default=20, metadata={"help": "Number of trainable prompt vectors P."})
    prompt_init: Literal["text", "random", "label-words"] = field(
        default="text",
        metadata={
            "help": "Initial prompt: embeddings of --prompt_text (default: the task's instruction), of random "
            "vocabulary tokens, or of the task's label words; text is cycled or cut to P tokens."
        },
    )
    prompt_text: str | None = field(default=None, metadata={"help": "Text for --prompt_init text."})

    def __post_init__(self):
        if self.prompt_length < 1:
            raise ConfigError(f"--prompt_length must be at least 1, got {self.prompt_length}")


def prompt_token_ids(tokenizer: PreTrainedTokenizerBase, text: str, length: int) -> torch.Tensor:
    """Token ids of `text`, cycled or cut to `length`."""
    token_ids = tokenizer(text, add_special_tokens=False).input_ids
    if not token_ids:
        raise ConfigError(f"prompt text {text!r} encodes to no tokens; pass another --prompt_text")
    return torch.tensor(token_ids).repeat(length // len(token_ids) + 1)[:length]


class SoftPrompt(Method):
    config_class: ClassVar[type[MethodConfig]] = SoftPromptConfig
    default_learning_rate: ClassVar[float] = 3e-3
    has_prompt_vectors: ClassVar[bool] = True
    adds_prompt_positions: ClassVar[bool] = True
    before_text: ClassVar[bool]

    def __init__(self, config: SoftPromptConfig, backbone: PreTrainedModel):
        super().__init__(config, backbone)
        hidden = backbone.get_input_embeddings().embedding_dim
        self.prompt = nn.Parameter(torch.zeros(config.prompt_length, hidden, dtype=torch.float32))

    @property
    def added_positions(self) -> int:
        return self.config.prompt_length

    def prompt_vectors(self) -> nn.Parameter:
        return self.prompt

    @torch.no_grad()
    def initialize(self, backbone: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: Task) -> None:
        config: SoftPromptConfig = self.config
        init, text = config.prompt_init, config.prompt_text or task.prompt_text
        if init == "text" and not text:
            logger.warning("task %r has no prompt text and no --prompt_text was given; using --prompt_init random", task.name)
            init = "random"
        if init == "label-words":
            if not task.label_words:
                raise ConfigError(f"task {task.name!r} has no label words; pass --label_words or another --prompt_init")
            text = "".join(task.label_words)
        if init == "random":
            special = set(tokenizer.all_special_ids)
            candidates = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
            ids = candidates[torch.randint(len(candidates), (config.prompt_length,))]
        else:
            ids = prompt_token_ids(tokenizer, text, config.prompt_length)
        weight = backbone.get_input_embeddings().weight
        self.prompt.copy_(weight[ids.to(weight.device)].float())

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> BackboneInputs:
        return place_prompt(inputs_embeds, attention_mask, self.prompt, self.before_text)


@register_method
class Suffix(SoftPrompt):
    """Prompt after the text: the text's key/value cache is the same for every task."""

    name = "suffix"
    report_order = 10
    before_text = False
    shares_text_cache = True

    def suffix_embeddings(self) -> torch.Tensor:
        return self.prompt


@register_method
class Prefix(SoftPrompt):
    """Prompt before the text, as in Lester et al. (2021) prompt tuning."""

    name = "prefix"
    report_order = 20
    before_text = True
