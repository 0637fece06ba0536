"""A frozen causal LM + a training method + a head, as one nn.Module with save/load of what trained."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_outputs import SequenceClassifierOutput

from . import __version__
from .artifacts import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    ClassifierConfig,
    atomic_write,
    config_digest,
    read_config,
    saved_config_fields,
    write_config,
)
from .backbone import load_backbone, tokenizer_fingerprint, weights_hash
from .errors import ArtifactError, ConfigError
from .heads import Head, build_head
from .methods import Method, MethodConfig, get_method
from .tasks import Task
from .tasks.data import Row, encode_rows
from .text_cache import TextCache, read_texts
from .text_pass import (
    backbone_call,
    check_nonempty,
    head_logits,
    method_states,
    pool,
    pool_positions,
    within_attention_window,
)

POOLINGS = ("last", "mean")
ARTIFACT_READERS = {
    "classification": "`suffixtune predict` or `suffixtune eval` (Classifier.from_pretrained)",
    "generation": "`suffixtune generate` or `suffixtune eval` (Generator.from_pretrained)",
}


def check_pooling(pooling: str) -> None:
    if pooling not in POOLINGS:
        raise ConfigError(f"unknown pooling {pooling!r}; choose from {list(POOLINGS)}")


def check_base_model(
    directory: str | os.PathLike, config: ClassifierConfig, backbone: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> None:
    """Refuse to load an artifact onto weights, or with a tokenizer, other than those it was trained with."""
    hidden = backbone.get_input_embeddings().embedding_dim
    if hidden != config.hidden_size or weights_hash(backbone) != config.base_model_hash:
        raise ArtifactError(
            f"{directory} was trained on base model {config.base_model!r} (hidden size {config.hidden_size}, "
            f"weights {config.base_model_hash}), but the given model {backbone.name_or_path!r} has hidden size "
            f"{hidden}, weights {weights_hash(backbone)}; load it onto {config.base_model!r}"
        )
    if config.tokenizer_hash is not None and tokenizer_fingerprint(tokenizer) != config.tokenizer_hash:
        raise ArtifactError(
            f"{directory} was trained with another tokenizer (fingerprint {config.tokenizer_hash}, the given one is "
            f"{tokenizer_fingerprint(tokenizer)}): its vocabulary, merges, special tokens or settings such as "
            f"add_prefix_space differ, so texts would become other token ids; use the tokenizer of {config.base_model!r}"
        )


def checkpointing(backbone: PreTrainedModel) -> bool:
    """Whether activation checkpointing is on (transformers 5.24 renamed is_gradient_checkpointing)."""
    flag = getattr(type(backbone), "is_activation_checkpointing", None)
    return bool(backbone.is_activation_checkpointing if flag is not None else backbone.is_gradient_checkpointing)


def length_sorted_batches(tokenizer: PreTrainedTokenizerBase, token_ids: list[list[int]], batch_size: int, device):
    """(row indices, padded batch) over rows sorted by length, so batches waste little on padding."""
    order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        yield chunk, tokenizer.pad({"input_ids": [token_ids[i] for i in chunk]}, return_tensors="pt").to(device)


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """Hash of named tensors' bytes, so damage inside a weights file (not only to its header) is caught."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(tensors):
        tensor = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}:{tensor.dtype}:{list(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class Classifier(nn.Module):
    task_kind = "classification"  # the artifacts it loads

    def __init__(
        self,
        backbone: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        method: Method,
        head: Head,
        config: ClassifierConfig,
    ):
        super().__init__()
        self.backbone = backbone
        self.method = method
        self.head = head
        self.tokenizer = tokenizer
        self.classifier_config = config
        self.frozen_text = True  # False: train through one full pass, as before (for comparison)
        self.text_cache: TextCache | None = None

    @classmethod
    def build(
        cls,
        backbone: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        task: Task,
        method: str = "suffix",
        method_config: MethodConfig | None = None,
        head: str = "linear",
        max_length: int = 256,
        pooling: str = "last",
    ) -> Classifier:
        """A fresh classifier for `task`: method state initialised, head new.

        Texts are cut to `max_length` tokens, and further if the model's context cannot hold them and the prompt.
        Methods that train backbone weights (lora, full, last-blocks) change `backbone` in place.
        """
        check_pooling(pooling)
        method_cls = get_method(method)
        method_config = method_config or method_cls.config_class()
        config = ClassifierConfig(
            base_model=backbone.name_or_path,
            base_model_hash=weights_hash(backbone),
            tokenizer_hash=tokenizer_fingerprint(tokenizer),
            hidden_size=backbone.get_input_embeddings().embedding_dim,
            method=method,
            method_config=method_config.to_dict(),
            head=head,
            pooling=pooling,
            task=task.name,
            label_names=None if task.label_names is None else list(task.label_names),
            label_words=None if task.label_words is None else list(task.label_words),
            text_columns=list(task.text_columns),
            label_column=task.label_column,
            metrics=list(task.metrics),
            template=task.template,
            max_length=max_length,
            suffixtune_version=__version__,
            task_kind=task.kind,
            target_column=task.target_column,
            render=task.render,
        )
        classifier = cls._assemble(backbone, tokenizer, config)
        positions = backbone.config.max_position_embeddings
        context = positions - classifier.method.added_positions
        if max_length < 1 or context < 1:
            raise ConfigError(
                f"--max_length {max_length} leaves no room for the text: it must be at least 1" if max_length < 1 else
                f"--method {method} adds {classifier.method.added_positions} positions, and the model holds {positions}, "
                f"leaving {context} for the text; use a shorter prompt (--prompt_length below {positions})"
            )
        config.max_length = min(max_length, context)
        classifier.method.initialize(backbone, tokenizer, task)
        config.method_config = classifier.method.config.to_dict()  # with what the method resolved and fell back to
        return classifier

    @classmethod
    def _assemble(cls, backbone, tokenizer, config: ClassifierConfig) -> Classifier:
        method_cls = get_method(config.method)
        device = backbone.get_input_embeddings().weight.device
        method = method_cls(method_cls.config_class(**config.method_config), backbone).to(device)
        head = build_head(config.head, backbone, tokenizer, config.num_labels, config.label_words).to(device)
        return cls(backbone, tokenizer, method, head, config)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None
    ) -> SequenceClassifierOutput:
        logits = head_logits(self.head, self.pooled_features(input_ids, attention_mask))  # [B, C] fp32
        loss = None if labels is None else self.loss(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def pooled_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, H] fp32: the hidden state the head reads."""
        pooling = self.classifier_config.pooling
        if self.runs_text_apart():  # the text without gradient (or from the text cache), then only the suffix
            prompt = self.method.suffix_embeddings()
            state = read_texts(self.backbone, input_ids, attention_mask, prompt is not None, self.text_cache)
            pooled = pool(pooling, method_states(self.backbone, state, [self.method])[0], state)  # suffix: [B, P, H] pooled
        else:
            embeds = self.backbone.get_input_embeddings()(input_ids)  # [B, L, H]
            inputs = self.method(embeds, attention_mask)  # [B, T, H], T = L + positions the method adds
            with self.method.adapting(inputs):
                hidden = backbone_call(
                    self.backbone, inputs.past_key_values, inputs_embeds=inputs.inputs_embeds,
                    position_ids=inputs.position_ids, use_cache=False,
                ).last_hidden_state  # [B, T, H]
            pooled = pool_positions(pooling, hidden, inputs.pool_index)
        return pooled

    @torch.no_grad()
    def standardize_head(self, token_ids: list[list[int]], batch_size: int = 64) -> None:
        """Fix the head's feature standardisation from these texts' features under the current method state."""
        was_training = self.training
        self.eval()
        device = self.backbone.get_input_embeddings().weight.device
        batches = length_sorted_batches(self.tokenizer, token_ids, batch_size, device)
        self.head.standardize(torch.cat([self.pooled_features(b["input_ids"], b["attention_mask"]) for _, b in batches]))
        self.train(was_training)

    def runs_text_apart(self) -> bool:
        """Frozen-text path: when training (or reading the text cache) a method that adds nothing before the text.

        Without gradient and without a cache, one full pass over [text | suffix] is the same work in one call.
        Activation checkpointing drops the cache the suffix attends to; it keeps the full pass (and is not needed
        here: only the P suffix positions keep activations for backward).
        """
        return self.runs_text_apart_when_training() and (torch.is_grad_enabled() or self.text_cache is not None)

    def runs_text_apart_when_training(self) -> bool:
        return (self.frozen_text and self.method.shares_text_cache and not checkpointing(self.backbone)
                and within_attention_window(self.backbone, self.longest_row()))

    def longest_row(self) -> int:
        """Most positions one row takes: the text and what the method adds."""
        return self.classifier_config.max_length + self.method.added_positions

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.classifier_config.label_names is None:
            return F.mse_loss(logits.squeeze(-1), labels.float())
        return F.cross_entropy(logits, labels.long())

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, **options):
        """Called by Trainer for --gradient_checkpointing: recompute the backbone's block activations in backward."""
        kwargs = {"use_reentrant": False, **(activation_checkpointing_kwargs or {})}
        if hasattr(self.backbone, "activation_checkpointing_enable"):
            self.backbone.activation_checkpointing_enable(kwargs, **options)
        else:  # transformers before the rename
            self.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None, **options):
        """What Trainer called before transformers renamed it activation checkpointing."""
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs, **options)

    def head_parameters(self):
        """What trains at --head_learning_rate."""
        return self.head.parameters()

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What trained, as artifacts store it: state dict hooks fold reparameterisations (a standardised head)."""
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        return {name: tensor for name, tensor in self.state_dict().items() if name in trainable}

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write the trained weights, bound to the config by its hash in their metadata, and the config, each atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.contiguous().cpu() for k, v in self.trainable_state_dict().items()}
        metadata = {"format": "pt", "suffixtune_config": config_digest(asdict(self.classifier_config)),
                    "suffixtune_weights": tensors_digest(tensors)}
        atomic_write(directory / WEIGHTS_NAME, lambda path: save_file(tensors, path, metadata=metadata))
        write_config(self.classifier_config, directory)

    def load_trained_weights(self, directory: str | os.PathLike) -> None:
        """Load what trained, after checking the weights belong to this config, fit its method and are finite."""
        path = Path(directory) / WEIGHTS_NAME
        if not path.is_file():
            raise ArtifactError(f"{directory}: no {WEIGHTS_NAME}")
        try:
            with safe_open(path, "pt", device=str(self.backbone.device)) as saved:
                metadata = saved.metadata() or {}
                state = {name: saved.get_tensor(name) for name in saved.keys()}
        except (SafetensorError, OSError) as error:
            raise ArtifactError(f"{path}: the artifact's weights are damaged ({error}); save or train it again") from None
        bound_to, weights_digest = metadata.get("suffixtune_config"), metadata.get("suffixtune_weights")
        if weights_digest is not None and weights_digest != tensors_digest(state):
            raise ArtifactError(f"{path}: the tensors are not the bytes that were saved (the file is damaged); "
                                "copy it again, or train the artifact again")
        config_file = Path(directory) / CONFIG_NAME
        if bound_to is not None and config_file.is_file() and bound_to != config_digest(saved_config_fields(directory)):
            raise ArtifactError(
                f"{directory}: {CONFIG_NAME} is not the config these weights were saved with (edited since?); "
                "restore it, or train the artifact again with the settings you want"
            )
        expected = {name: tensor.shape for name, tensor in self.trainable_state_dict().items()}
        if set(state) != set(expected):
            raise ArtifactError(
                f"{path}: tensors {sorted(set(state) ^ set(expected))} do not fit method "
                f"{self.classifier_config.method!r} with head {self.classifier_config.head!r}"
            )
        for name, tensor in state.items():
            if tensor.shape != expected[name]:
                raise ArtifactError(f"{path}: tensor {name!r} has shape {list(tensor.shape)}, the config's method needs "
                                    f"{list(expected[name])}")
            if not torch.isfinite(tensor).all():
                raise ArtifactError(f"{path}: tensor {name!r} holds NaN or infinite values; the artifact is damaged")
        self.load_state_dict(state, strict=False)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        backbone: PreTrainedModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str = torch.float32,
        model: str | None = None,
    ) -> Classifier:
        """Load an artifact onto `backbone`, else onto `model` (a copy of its base model elsewhere), else the one it records.

        Whichever it is, its weights and tokenizer must be those the artifact was trained with.
        """
        config = read_config(directory)
        cls.check_kind(directory, config)
        if backbone is None:
            backbone, tokenizer = load_backbone(model or config.base_model, dtype=dtype, device=device)
        elif tokenizer is None:
            raise ValueError("pass the tokenizer together with the backbone")
        check_base_model(directory, config, backbone, tokenizer)
        classifier = cls._assemble(backbone, tokenizer, config)
        classifier.load_trained_weights(directory)
        return classifier

    @classmethod
    def check_kind(cls, directory: str | os.PathLike, config: ClassifierConfig) -> None:
        """Refuse an artifact of the other kind (generation for a Classifier), naming what reads it."""
        if config.task_kind != cls.task_kind:
            raise ArtifactError(f"{directory} is a {config.task_kind} artifact (task {config.task!r}), not a {cls.task_kind} "
                                f"one; use {ARTIFACT_READERS.get(config.task_kind, 'a suffixtune that knows this kind')}")

    @torch.no_grad()
    def predict_logits(self, rows: Sequence[Row], batch_size: int = 64) -> torch.Tensor:
        """Logits [N, C] in length-sorted batches; a row is a text, or a mapping of a text-pair task's columns."""
        was_training = self.training
        self.eval()
        config = self.classifier_config
        encoded, _ = encode_rows(config.as_task(), rows, self.tokenizer, config.max_length)
        check_nonempty(encoded)
        device = self.backbone.get_input_embeddings().weight.device
        logits = torch.empty(len(rows), config.num_labels)
        for chunk, batch in length_sorted_batches(self.tokenizer, encoded, batch_size, device):
            logits[chunk] = self(batch["input_ids"], batch["attention_mask"]).logits.cpu()
        self.train(was_training)
        return logits

    def predict(self, rows: Sequence[Row], batch_size: int = 64) -> list[dict[str, Any]]:
        """Label and class probabilities (or a value, for regression) per row."""
        return [self.describe(logits) for logits in self.predict_logits(rows, batch_size)]

    def describe(self, logits: torch.Tensor) -> dict[str, Any]:
        names = self.classifier_config.label_names
        if names is None:
            return {"value": logits.item()}
        probabilities = logits.softmax(-1)
        return {"label": names[int(probabilities.argmax())], "probabilities": dict(zip(names, probabilities.tolist(), strict=True))}
