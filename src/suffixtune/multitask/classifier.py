"""Many tasks on one backbone: suffix-prompt tasks share one pass over each text and its keys and values."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Self

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..artifacts import read_config
from ..backbone import load_backbone
from ..classifier import Classifier, check_base_model, length_sorted_batches
from ..errors import ConfigError
from ..methods import get_method
from ..tasks.data import Row, encode_rows
from ..text_pass import (
    check_nonempty,
    encode_texts,
    head_logits,
    method_states,
    packed_pass,
    pool,
    within_attention_window,
)

logger = logging.getLogger(__name__)

TEXT_PASSES = ("packed", "cached")  # see shared_pass_logits


@dataclass(frozen=True)
class TaskInfo:
    """What a loaded task answers and how it runs."""

    name: str
    task: str
    kind: str  # classification or generation
    method: str
    head: str
    labels: list[str] | None  # None: regression, or generation
    prompt_length: int
    pooling: str
    text_columns: list[str]
    max_length: int
    shared_cache: bool  # False: one full pass of its own per text (prefix, deep-prefix, lora, full, last-blocks)
    artifact: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TextGroup:
    """Tasks that read the same tokens for every row, so one pass serves them all."""

    tasks: list[str]
    input_ids: list[list[int]]  # per row, cut to what these tasks read
    token_counts: list[int]  # per row, before cutting

    @property
    def truncated(self) -> list[int]:
        return [i for i, (ids, count) in enumerate(zip(self.input_ids, self.token_counts, strict=True)) if len(ids) < count]


class MultiTaskClassifier:
    """Classifiers for many tasks on one frozen backbone.

    Tasks whose method only adds vectors after the text (`suffix`, and `head` with none) are answered from a single
    pass per text: its keys and values are computed once and every task's suffix, packed after it, reads them.
    Other methods run their ordinary full pass; those that change the backbone (lora, full, last-blocks) on a copy.
    """

    artifact_class = Classifier  # what each artifact loads as

    def __init__(
        self,
        backbone: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        classifiers: Mapping[str, Classifier],
        artifacts: Mapping[str, str] | None = None,
        text_pass: str = "packed",
    ):
        if text_pass not in TEXT_PASSES:
            raise ConfigError(f"unknown text pass {text_pass!r}; choose from {list(TEXT_PASSES)}")
        self.text_pass = text_pass
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.classifiers = dict(classifiers)
        artifacts = artifacts or {}
        shared = [name for name, c in self.classifiers.items() if c.method.shares_text_cache and c.backbone is backbone]
        if shared and not self.shared_pass_fits([self.classifiers[name] for name in shared]):
            logger.warning("%s has sliding-window or local attention that one shared pass per text could run past: "
                           "tasks %s each run a pass of their own", self.base_model, shared)
            shared = []
        self.tasks = {name: task_info(name, c, name in shared, artifacts.get(name, "")) for name, c in self.classifiers.items()}

    @property
    def base_model(self) -> str:
        return self.backbone.name_or_path

    def shared_pass_fits(self, classifiers: Sequence[Classifier]) -> bool:
        """Whether the packed pass, [text | every suffix], stays inside the backbone's attention windows."""
        longest_text = max(c.classifier_config.max_length for c in classifiers)
        return within_attention_window(self.backbone, longest_text + sum(c.method.added_positions for c in classifiers))

    @classmethod
    def from_pretrained(
        cls,
        artifacts: Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike],
        backbone: PreTrainedModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str = torch.float32,
        model: str | None = None,
        text_pass: str = "packed",
    ) -> Self:
        """Load artifacts of one base model, named by their task or by the keys of a mapping.

        `text_pass` is how suffix tasks share each text: see `shared_pass_logits`.
        """
        named = {str(k): str(v) for k, v in artifacts.items()} if isinstance(artifacts, Mapping) else name_artifacts([(None, d) for d in artifacts])
        if not named:
            raise ConfigError("give at least one artifact directory")
        configs = {name: read_config(directory) for name, directory in named.items()}
        for name, config in configs.items():
            cls.artifact_class.check_kind(named[name], config)
        alone = backbone is None and len(configs) == 1  # a backbone of its own: nothing else reads it, no copy needed
        if backbone is None:
            backbone, tokenizer = load_backbone(model or next(iter(configs.values())).base_model, dtype=dtype, device=device)
        elif tokenizer is None:
            raise ValueError("pass the tokenizer together with the backbone")
        for name, config in configs.items():
            check_base_model(named[name], config, backbone, tokenizer)
        classifiers = {}
        for name, config in configs.items():
            method = get_method(config.method)
            if not method.shares_text_cache and not alone:
                logger.warning(
                    "task %r (%s) uses --method %s, which does not share the text cache: it runs a full pass of its "
                    "own per text%s", name, named[name], config.method,
                    ", on its own copy of the backbone" if method.modifies_backbone else "",
                )
            own = copy.deepcopy(backbone) if method.modifies_backbone and not alone else backbone
            classifiers[name] = cls.artifact_class.from_pretrained(named[name], backbone=own, tokenizer=tokenizer).eval()
        return cls(backbone, tokenizer, classifiers, named, text_pass)

    def check_tasks(self, tasks: Sequence[str] | None) -> list[str]:
        if tasks is None:
            return list(self.classifiers)
        unknown = [t for t in tasks if t not in self.classifiers]
        if unknown:
            raise ConfigError(f"unknown task(s) {unknown}; loaded tasks are {sorted(self.classifiers)}")
        if not tasks:
            raise ConfigError(f"no tasks asked for; leave tasks out for all of them, or name some of {sorted(self.classifiers)}")
        return list(dict.fromkeys(tasks))

    def encode(self, rows: Sequence[Row], tasks: Sequence[str] | None = None) -> list[TextGroup]:
        """Token ids of every row, per group of tasks that read the same tokens; checks every row.

        A string row is each task's first text column; text-pair tasks need a mapping with each of their columns.
        Tasks share a group when every row gives them the same tokens after formatting and truncation, whatever
        their columns are called.
        """
        encoded: dict[tuple, tuple[list[list[int]], list[int]]] = {}
        groups: dict[tuple, TextGroup] = {}
        for name in self.check_tasks(tasks):
            config = self.classifiers[name].classifier_config
            task = replace(config.as_task(), name=name)
            key = (task.template, task.text_columns, config.max_length)
            if key not in encoded:
                encoded[key] = encode_rows(task, rows, self.tokenizer, config.max_length)
                check_nonempty(encoded[key][0])
            ids, counts = encoded[key]
            group = groups.setdefault(tuple(map(tuple, ids)), TextGroup([], ids, counts))
            group.tasks.append(name)
        return list(groups.values())

    def classify(self, rows: Sequence[Row], tasks: Sequence[str] | None = None, batch_size: int = 64) -> list[dict[str, dict[str, Any]]]:
        """Per row, per task: label and class probabilities, or value for regression."""
        names = self.check_tasks(tasks)
        results: list[dict[str, dict[str, Any]]] = [{} for _ in rows]
        device = self.backbone.get_input_embeddings().weight.device
        for group in self.encode(rows, names):
            for chunk, batch in length_sorted_batches(self.tokenizer, group.input_ids, batch_size, device):
                for name, logits in self.forward(batch["input_ids"], batch["attention_mask"], group.tasks).items():
                    describe_row = self.classifiers[name].describe
                    for i, row_logits in zip(chunk, logits.cpu(), strict=True):
                        results[i][name] = describe_row(row_logits)
        return [{name: result[name] for name in names} for result in results]

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, tasks: Sequence[str]) -> dict[str, torch.Tensor]:
        """Logits [B, C] per task for one tokenized batch that every task in `tasks` reads as is."""
        shared = [name for name in tasks if self.tasks[name].shared_cache]
        logits = {}
        if len(shared) > 1:  # with one, its ordinary pass is the same work
            classifiers = [self.classifiers[name] for name in shared]
            logits = dict(zip(shared, shared_pass_logits(self.backbone, classifiers, input_ids, attention_mask, self.text_pass), strict=True))
        for name in tasks:
            if name not in logits:
                logits[name] = self.classifiers[name](input_ids, attention_mask).logits
        return {name: logits[name] for name in tasks}


def shared_pass_logits(
    backbone: PreTrainedModel, classifiers: Sequence[Classifier], input_ids: torch.Tensor, attention_mask: torch.Tensor,
    text_pass: str = "packed",
) -> list[torch.Tensor]:
    """Logits of every task from one pass over each text: its keys and values are computed once for all tasks.

    `packed`: one call over [text | suffix 1 | ... | suffix K] with a block mask. `cached`: the text pass keeps its
    keys and values, then one call runs all suffixes against them.
    """
    prompts = [c.method.suffix_embeddings() for c in classifiers]
    if text_pass == "packed" and not any(c.method.adapts_suffix for c in classifiers):
        state, hidden = packed_pass(backbone, input_ids, attention_mask, prompts)
    else:  # a suffix that adapts the weights runs in a call of its own, against the kept keys and values
        state = encode_texts(backbone, input_ids, attention_mask, keep_cache=any(p is not None for p in prompts))
        hidden = method_states(backbone, state, [c.method for c in classifiers])
    return [
        head_logits(c.head, pool(c.classifier_config.pooling, h, state)) for c, h in zip(classifiers, hidden, strict=True)
    ]


def task_info(name: str, classifier: Classifier, shared: bool, artifact: str) -> TaskInfo:
    config = classifier.classifier_config
    return TaskInfo(
        name=name, task=config.task, kind=config.task_kind, method=config.method, head=config.head, labels=config.label_names,
        prompt_length=classifier.method.added_positions, pooling=config.pooling, text_columns=list(config.text_columns),
        max_length=config.max_length, shared_cache=shared, artifact=artifact,
    )


def name_artifacts(artifacts: Sequence[tuple[str | None, str | os.PathLike]]) -> dict[str, str]:
    """{name: directory} from (name or None, directory) pairs; an artifact without a name is named by its task."""
    named: dict[str, str] = {}
    for name, directory in artifacts:
        name = name or read_config(directory).task
        if name in named:
            raise ConfigError(
                f"{named[name]} and {directory} are both named {name!r}; name them as NAME=DIR, "
                f"e.g. {name}-a={named[name]} {name}-b={directory}"
            )
        named[name] = str(Path(directory))
    return named
