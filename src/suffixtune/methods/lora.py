"""LoRA (Hu et al. 2021) through PEFT: low-rank updates trained inside the backbone's attention projections."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

from ..errors import ConfigError
from . import register_method
from .base import Method, MethodConfig

DEFAULT_TARGETS = {
    "gpt2": ["c_attn"],
    "gpt_neo": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "gptj": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "gpt_neox": ["query_key_value"],
}
LLAMA_LIKE_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]  # llama, mistral, qwen2, gemma, phi3, ...


@dataclass
class LoraMethodConfig(MethodConfig):
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: float = field(default=16, metadata={"help": "LoRA scaling numerator: updates are scaled by alpha / r."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA branch's input."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Module names (or name suffixes) to adapt; default per architecture: GPT-2 c_attn, "
                  "Llama-family q/k/v/o_proj, GPT-Neo q/k/v/out_proj."},
    )

    def __post_init__(self):
        if self.lora_r < 1:
            raise ConfigError(f"--lora_r must be at least 1, got {self.lora_r}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"--lora_dropout must be in [0, 1), got {self.lora_dropout}")


def default_targets(backbone: PreTrainedModel) -> list[str]:
    model_type = backbone.config.model_type
    if model_type in DEFAULT_TARGETS:
        return DEFAULT_TARGETS[model_type]
    names = {name.rsplit(".", 1)[-1] for name, _ in backbone.named_modules()}
    if set(LLAMA_LIKE_TARGETS) <= names:
        return LLAMA_LIKE_TARGETS
    raise ConfigError(
        f"no default LoRA targets for model type {model_type!r}; pass --lora_target_modules, e.g. the attention "
        f"projections among {sorted(linear_module_names(backbone))}"
    )


def linear_module_names(backbone: PreTrainedModel) -> set[str]:
    return {name.rsplit(".", 1)[-1] for name, m in backbone.named_modules() if isinstance(m, torch.nn.Linear | Conv1D)}


@register_method
class Lora(Method):
    """PEFT's LoRA layers are injected into the backbone in place; only their A and B matrices train (in fp32)."""

    name = "lora"
    config_class: ClassVar[type[MethodConfig]] = LoraMethodConfig
    default_learning_rate: ClassVar[float] = 5e-4
    default_head_learning_rate: ClassVar[float | None] = 3e-3
    modifies_backbone: ClassVar[bool] = True
    report_order: ClassVar[int] = 40

    def __init__(self, config: LoraMethodConfig, backbone: PreTrainedModel):
        super().__init__(config, backbone)
        if any(isinstance(module, BaseTunerLayer) for module in backbone.modules()):
            raise ConfigError("this backbone already carries PEFT adapters; load a fresh backbone for each LoRA classifier")
        targets = config.lora_target_modules = config.lora_target_modules or default_targets(backbone)
        targeted = [m for name, m in backbone.named_modules() if any(name == t or name.endswith(f".{t}") for t in targets)]
        if not targeted:
            raise ConfigError(
                f"--lora_target_modules {targets} match no module of {backbone.name_or_path}; "
                f"its linear layers are named {sorted(linear_module_names(backbone))}"
            )
        lora_config = LoraConfig(
            r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout, target_modules=targets,
            fan_in_fan_out=any(isinstance(m, Conv1D) for m in targeted),  # GPT-2 stores weights transposed
        )
        inject_adapter_in_model(lora_config, backbone)
        for name, param in backbone.named_parameters():
            if "lora_" in name:
                param.data = param.data.float()
                param.requires_grad_(True)
