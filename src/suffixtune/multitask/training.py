"""Several label columns of one dataset trained in one run: one suffix and head per column, one text pass per batch."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from ..classifier import Classifier
from ..errors import ConfigError
from ..text_cache import read_texts
from ..text_pass import attention_window, head_logits, method_states, pool, within_attention_window


class MultiTaskTrainingModel(nn.Module):
    """K classifiers on one frozen backbone, trained together: the text is read once, the K suffixes run packed.

    Each task's loss reaches only its own prompt and head (the block mask keeps suffixes apart), so the summed loss
    gives every task the gradients it would get alone. Logits are the tasks' logits side by side, [B, sum C_k];
    labels are [B, K]. Saving writes one ordinary artifact per task, in a folder named after it.
    """

    def __init__(self, classifiers: Mapping[str, Classifier]):
        super().__init__()
        first = next(iter(classifiers.values()))
        for name, classifier in classifiers.items():
            if classifier.backbone is not first.backbone:
                raise ValueError(f"task {name!r} is on another backbone; multi-task training shares one")
            if not classifier.method.shares_text_cache:
                raise ConfigError(
                    f"--method {classifier.classifier_config.method} cannot train several label columns in one run: "
                    "only methods after the text (suffix, head) share the text pass; train one column per run"
                )
        longest = max(c.classifier_config.max_length for c in classifiers.values()) + sum(c.method.added_positions for c in classifiers.values())
        if not within_attention_window(first.backbone, longest):
            raise ConfigError(
                f"several --label_column train from one text pass with every suffix after it, {longest} positions, "
                f"which {first.backbone.name_or_path}'s attention window of {attention_window(first.backbone.config)} "
                "cannot hold; lower --max_length or --prompt_length, or train one column per run"
            )
        self.tasks = nn.ModuleDict(classifiers)
        self.backbone = first.backbone
        self.text_cache = None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None) -> SequenceClassifierOutput:
        prompts = [c.method.suffix_embeddings() for c in self.tasks.values()]
        state = read_texts(self.backbone, input_ids, attention_mask, any(p is not None for p in prompts), self.text_cache)
        logits, losses = [], []
        hiddens = method_states(self.backbone, state, [c.method for c in self.tasks.values()])
        for k, (classifier, hidden) in enumerate(zip(self.tasks.values(), hiddens, strict=True)):
            pooled = pool(classifier.classifier_config.pooling, hidden, state)
            logits.append(head_logits(classifier.head, pooled))
            if labels is not None:
                losses.append(classifier.loss(logits[-1], labels[:, k]))
        return SequenceClassifierOutput(loss=torch.stack(losses).sum() if losses else None, logits=torch.cat(logits, 1))

    def parameter_groups(self) -> list[list[nn.Parameter]]:
        """Each task's trainable parameters: gradients are clipped per task, as K runs alone would clip them."""
        return [[p for p in c.parameters() if p.requires_grad] for c in self.tasks.values()]

    def head_parameters(self):
        for classifier in self.tasks.values():
            yield from classifier.head_parameters()

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        for name, classifier in self.tasks.items():
            classifier.save_pretrained(Path(directory) / name)

    def load_trained_weights(self, directory: str | os.PathLike) -> None:
        for name, classifier in self.tasks.items():
            classifier.load_trained_weights(Path(directory) / name)

