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
    reparam: bool = field(
        default=False,
        metadata={"help": "Train the prompt as E + MLP(E) (Residual Prompt Tuning); the MLP's output layer starts at "
                  "zero, so training starts from --prompt_init. Saved folded into plain vectors: artifacts and "
                  "serving do not change (a resumed run restarts the MLP from zero output, at the same prompt)."},
    )
    reparam_hidden_size: int = field(default=512, metadata={"help": "Hidden width of the --reparam MLP."})

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
        self.reparam = None
        if config.reparam:
            self.reparam = nn.Sequential(nn.Linear(hidden, config.reparam_hidden_size), nn.ReLU(), nn.Linear(config.reparam_hidden_size, hidden))
            nn.init.zeros_(self.reparam[2].weight)
            nn.init.zeros_(self.reparam[2].bias)
            self.register_state_dict_post_hook(fold_reparam)
            self.register_load_state_dict_pre_hook(unfold_reparam)

    @property
    def added_positions(self) -> int:
        return self.config.prompt_length

    def prompt_vectors(self) -> torch.Tensor:
        """[P, H] the prompt the backbone reads: the trained vectors, through the residual MLP with --reparam."""
        return self.prompt if self.reparam is None else self.prompt + self.reparam(self.prompt)

    @torch.no_grad()
    def initialize(self, backbone: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: Task) -> None:
        config: SoftPromptConfig = self.config
        init, text = config.prompt_init, config.prompt_text or task.prompt_text
        if init == "text" and not text:
            logger.warning("task %r has no prompt text and no --prompt_text was given; using --prompt_init random", task.name)
            init = config.prompt_init = "random"  # the artifact and record say what was done
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
        return place_prompt(inputs_embeds, attention_mask, self.prompt_vectors(), self.before_text)


def fold_reparam(method: SoftPrompt, state: dict[str, torch.Tensor], prefix: str, local_metadata) -> None:
    """State dict hook: store E + MLP(E) as the prompt, and no MLP."""
    with torch.no_grad():
        state[prefix + "prompt"] = method.prompt_vectors().detach().clone()
    for name in [k for k in state if k.startswith(prefix + "reparam.")]:
        del state[name]


def unfold_reparam(method: SoftPrompt, state: dict[str, torch.Tensor], prefix: str, *args) -> None:
    """Load pre-hook for folded vectors: E = the saved prompt, MLP output layer zero, so E + MLP(E) = E exactly."""
    if prefix + "prompt" in state and not any(k.startswith(prefix + "reparam.") for k in state):
        for name, tensor in method.reparam.state_dict().items():
            state[prefix + "reparam." + name] = torch.zeros_like(tensor) if name.startswith("2.") else tensor


@register_method
class Suffix(SoftPrompt):
    """Prompt after the text: the text's key/value cache is the same for every task."""

    name = "suffix"
    report_order = 10
    before_text = False
    shares_text_cache = True
    default_standardize = "features"  # 5 seeds on SST-2: worst seed 0.547 raw, see docs/results.md

    def suffix_embeddings(self) -> torch.Tensor:
        return self.prompt_vectors()


@register_method
class Prefix(SoftPrompt):
    """Prompt before the text, as in Lester et al. (2021) prompt tuning."""

    name = "prefix"
    report_order = 20
    before_text = True
