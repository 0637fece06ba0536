"""Classification heads: read one pooled hidden state, return class logits (or one regression value)."""

from __future__ import annotations

import difflib
from typing import ClassVar

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..errors import ConfigError

HEADS: dict[str, type[Head]] = {}


class Head(nn.Module):
    name: ClassVar[str]
    can_standardize: ClassVar[bool] = False  # trains on standardised features (`standardize`), saved folded into it

    @classmethod
    def check(cls, num_labels: int, label_words: list[str] | tuple[str, ...] | None) -> None:
        """Raise ConfigError if this head cannot serve a task with these labels."""

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:  # [B, H] fp32 -> [B, num_labels]
        raise NotImplementedError


def register_head(cls: type[Head]) -> type[Head]:
    if cls.name in HEADS:
        raise ValueError(f"head {cls.name!r} is already registered")
    HEADS[cls.name] = cls
    return cls


def check_head(name: str, num_labels: int, label_words: list[str] | tuple[str, ...] | None) -> None:
    """Refuse a head that cannot work for this task, before any model loads."""
    if name not in HEADS:
        hint = difflib.get_close_matches(name, HEADS, n=1)
        raise ConfigError(f"unknown head {name!r}{f' (did you mean {hint[0]!r}?)' if hint else ''}; choose from {sorted(HEADS)}")
    HEADS[name].check(num_labels, label_words)


def build_head(
    name: str,
    backbone: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    num_labels: int,
    label_words: list[str] | None,
) -> Head:
    check_head(name, num_labels, label_words)
    return HEADS[name].build(backbone, tokenizer, num_labels, label_words)


@register_head
class LinearHead(Head):
    """A new fp32 Linear(hidden, num_labels), optionally on standardised features.

    Decoder LMs' hidden states carry a few huge dimensions that every text shares (SmolLM2: norm ~50, one
    dimension ~44). A linear head on them is badly conditioned: its weight on such a dimension acts as a bias
    with a ~40x larger step. `standardize` centres and scales each feature by statistics of training texts,
    fixed from then on; the state dict holds the equivalent plain Linear (W / s, b - (W / s) c), so artifacts and
    serving never see the standardisation, and loading into a standardising head maps it back exactly.
    """

    name = "linear"
    can_standardize = True

    def __init__(self, hidden_size: int, num_labels: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, num_labels, dtype=torch.float32)
        nn.init.normal_(self.linear.weight, std=0.02)
        nn.init.zeros_(self.linear.bias)
        self.register_buffer("center", None, persistent=False)  # [H]
        self.register_buffer("scale", None, persistent=False)  # [H]
        self.register_state_dict_post_hook(fold_standardization)
        self.register_load_state_dict_pre_hook(unfold_standardization)

    def standardize(self, features: torch.Tensor) -> None:
        """Train from now on with features [N, H] mapped to zero mean and unit variance per dimension."""
        features = features.float()
        std = features.std(0)
        self.center = features.mean(0)
        self.scale = std.clamp_min(1e-3 * float(std.mean()) + 1e-12)  # a constant dimension is not blown up

    @classmethod
    def build(cls, backbone, tokenizer, num_labels, label_words):
        return cls(backbone.get_input_embeddings().embedding_dim, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        if self.center is not None:
            pooled = (pooled - self.center) / self.scale
        return self.linear(pooled)


def fold_standardization(head: LinearHead, state: dict[str, torch.Tensor], prefix: str, local_metadata) -> None:
    """State dict hook: store the plain Linear that equals standardise-then-Linear."""
    if head.center is not None:
        weight = state[prefix + "linear.weight"] / head.scale
        state[prefix + "linear.bias"] = state[prefix + "linear.bias"] - weight @ head.center
        state[prefix + "linear.weight"] = weight


def unfold_standardization(head: LinearHead, state: dict[str, torch.Tensor], prefix: str, *args) -> None:
    """Load pre-hook: the inverse of `fold_standardization`, so a folded checkpoint resumes the same function."""
    if head.center is not None and prefix + "linear.weight" in state:
        weight = state[prefix + "linear.weight"].to(head.scale.device)
        state[prefix + "linear.bias"] = state[prefix + "linear.bias"].to(head.scale.device) + weight @ head.center
        state[prefix + "linear.weight"] = weight * head.scale


@register_head
class VerbalizerHead(Head):
    """The LM head's logits for one label word per class; no new parameters.

    Only the label words' rows of the output embedding are kept (a copy, not saved), so scoring costs
    num_labels dot products instead of a vocabulary-sized matmul.
    """

    name = "verbalizer"

    def __init__(self, rows: torch.Tensor, bias: torch.Tensor | None, token_ids: list[int]):
        super().__init__()
        self.token_ids = token_ids
        self.register_buffer("rows", rows.float(), persistent=False)  # [C, H]
        self.register_buffer("bias", None if bias is None else bias.float(), persistent=False)  # [C]

    @classmethod
    def check(cls, num_labels, label_words):
        if num_labels < 2:
            raise ConfigError("--head verbalizer needs a classification task; for regression (num_labels=1) use --head linear")
        if not label_words or len(label_words) != num_labels:
            raise ConfigError(
                f"--head verbalizer needs one label word per class ({num_labels}), got {label_words}; "
                "pass --label_words, e.g. --label_words ' negative' ' positive'"
            )

    @classmethod
    def build(cls, backbone, tokenizer, num_labels, label_words):
        token_ids = [first_token(tokenizer, word) for word in label_words]
        if len(set(token_ids)) != len(token_ids):
            raise ConfigError(f"label words {label_words} start with the same token; choose words that differ at the start")
        output = backbone.get_output_embeddings()
        index = torch.tensor(token_ids, device=output.weight.device)
        bias = output.bias[index] if getattr(output, "bias", None) is not None else None
        return cls(output.weight[index].detach(), bias, token_ids)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        logits = pooled @ self.rows.T
        return logits if self.bias is None else logits + self.bias


@register_head
class LMHead(Head):
    """The language model's own output layer over the vocabulary, for generation; it adds no parameters.

    It reads the backbone's output embeddings when called, so methods that train them (full) are seen; it holds
    them outside its own state, so artifacts store nothing for it.
    """

    name = "lm"

    def __init__(self, backbone: PreTrainedModel):
        super().__init__()
        self.backbone = [backbone]  # a list: not a submodule, so not saved or counted twice

    @classmethod
    def check(cls, num_labels, label_words):
        if num_labels:
            raise ConfigError("--head lm writes text for generation tasks; a classification task takes --head linear or verbalizer")

    @classmethod
    def build(cls, backbone, tokenizer, num_labels, label_words):
        changed = [k for k in ("final_logit_softcapping", "logit_scale") if getattr(backbone.config, k, None) not in (None, 1, 1.0)]
        if changed:
            raise ConfigError(f"{backbone.name_or_path} changes its logits after the output layer ({', '.join(changed)}), "
                              "which training through --head lm would not match; generation supports models without it")
        return cls(backbone)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # [..., H] -> [..., vocabulary] fp32
        output = self.backbone[0].get_output_embeddings()
        return output(hidden.to(output.weight.dtype)).float()


def first_token(tokenizer: PreTrainedTokenizerBase, word: str) -> int:
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if not ids:
        raise ConfigError(f"label word {word!r} encodes to no tokens")
    return ids[0]


__all__ = ["HEADS", "Head", "LMHead", "LinearHead", "VerbalizerHead", "build_head", "check_head", "register_head"]
