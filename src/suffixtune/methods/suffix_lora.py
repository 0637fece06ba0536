"""`suffix-lora`: a suffix prompt plus LoRA weights that act only at the suffix positions.

The text runs through the frozen weights, so its keys and values stay the same for every task: the text cache, the
frozen-text training path and the shared multi-task pass all serve it. Only the P suffix positions see the low-rank
updates. This is PEFT's Activated LoRA (`alora_invocation_tokens`) with the soft prompt as the invocation; the
tests check it against PEFT's aLoRA layers given the same matrices.

The LoRA matrices belong to the method, not to the backbone: its forward hooks on the target projections add
`scaling * B A x` only while `adapting()` is open, so several tasks share one backbone and their artifacts hold
their own matrices under the same names.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

from ..errors import ConfigError
from . import register_method
from .base import BackboneInputs, MethodConfig
from .lora import LoraMethodConfig, default_targets, linear_module_names
from .soft_prompt import SoftPromptConfig, Suffix


@dataclass
class SuffixLoraConfig(LoraMethodConfig, SoftPromptConfig):
    def __post_init__(self):
        SoftPromptConfig.__post_init__(self)
        LoraMethodConfig.__post_init__(self)


@register_method
class SuffixLora(Suffix):
    """Suffix prompt + LoRA on the attention projections, active at the suffix positions only."""

    name = "suffix-lora"
    config_class: ClassVar[type[MethodConfig]] = SuffixLoraConfig
    report_order = 15
    adapts_suffix = True
    supports_generation = False  # its LoRA acts at the suffix positions; a target after them is not yet defined

    def __init__(self, config: SuffixLoraConfig, backbone: PreTrainedModel):
        super().__init__(config, backbone)
        targets = config.lora_target_modules = config.lora_target_modules or default_targets(backbone)
        modules = {
            name: m for name, m in backbone.named_modules()
            if isinstance(m, nn.Linear | Conv1D) and any(name == t or name.endswith(f".{t}") for t in targets)
        }
        if not modules:
            raise ConfigError(
                f"--lora_target_modules {targets} match no linear layer of {backbone.name_or_path}; "
                f"its linear layers are named {sorted(linear_module_names(backbone))}"
            )
        self.scaling = config.lora_alpha / config.lora_r
        self.dropout = nn.Dropout(config.lora_dropout)
        self.lora_A, self.lora_B = nn.ParameterDict(), nn.ParameterDict()
        self.active_from: torch.Tensor | int | None = None  # first adapted position per row, 0 for all; None: off
        for name, module in modules.items():
            fan_in, fan_out = module.weight.shape[::-1] if isinstance(module, nn.Linear) else module.weight.shape
            key = name.replace(".", "__")
            self.lora_A[key] = nn.Parameter(torch.empty(config.lora_r, fan_in, device=module.weight.device))
            self.lora_B[key] = nn.Parameter(torch.zeros(fan_out, config.lora_r, device=module.weight.device))
            nn.init.kaiming_uniform_(self.lora_A[key], a=math.sqrt(5))  # as PEFT initialises A; B starts at zero
            module.register_forward_hook(self.adapter_hook(key))

    def adapter_hook(self, key: str):
        def add_update(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if self.active_from is None:
                return None
            x = inputs[0]
            update = self.dropout(x.float()) @ self.lora_A[key].T @ self.lora_B[key].T * self.scaling  # [B, T, out]
            if not isinstance(self.active_from, int):
                positions = torch.arange(x.shape[1], device=x.device)
                update = update * (positions[None, :] >= self.active_from[:, None]).unsqueeze(-1)
            return output + update.to(output.dtype)

        return add_update

    @contextlib.contextmanager
    def adapting(self, inputs: BackboneInputs | None = None) -> Iterator[None]:
        self.active_from = 0 if inputs is None else inputs.pool_index - self.config.prompt_length + 1
        try:
            yield
        finally:
            self.active_from = None
