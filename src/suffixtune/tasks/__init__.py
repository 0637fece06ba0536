"""Tasks are data: where the rows live, which columns hold text and label (or target), the label names and metrics."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigError

TASKS: dict[str, Task] = {}
RENDERERS: dict[str, Callable[[str], str]] = {}  # Task.render names one: how a source column is written as text


@dataclass(frozen=True)
class Task:
    name: str
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...] | None  # None means regression (one output)
    metrics: tuple[str, ...] = ("accuracy",)
    label_column: str = "label"
    template: str | None = None  # joins the text columns with str.format; default: joined by newlines
    label_words: tuple[str, ...] | None = None  # for --head verbalizer and --prompt_init label-words
    prompt_text: str | None = None  # default text for --prompt_init text
    files: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # split -> file names tried in --data DIR
    rename: Mapping[str, str] = field(default_factory=dict)  # file column -> canonical column
    headerless_columns: tuple[str, ...] | None = None  # column names for delimited files without a header row
    hub: tuple[str, str] | None = None  # (dataset id, config) for datasets.load_dataset
    kind: Literal["classification", "generation"] = "classification"
    target_column: str | None = None  # generation: the column the model learns to write
    render: str | None = None  # generation: how source text is written before the template (`RENDERERS`), None: as it stands
    held_out: float | None = None  # generation without a validation file: this fraction of the train file's sources

    @property
    def num_labels(self) -> int:
        """Outputs of a classification head: one per class, one for regression, none for generation."""
        if self.is_generation:
            return 0
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def is_regression(self) -> bool:
        return self.label_names is None and not self.is_generation

    @property
    def is_generation(self) -> bool:
        return self.kind == "generation"

    def rendered(self, row: Mapping[str, str]) -> Mapping[str, str]:
        """The row's text columns as the model reads them (E2E meaning representations as text), before `format`."""
        if self.render is None:
            return row
        return {c: RENDERERS[self.render](row[c]) for c in self.text_columns}

    def format(self, row: Mapping[str, str]) -> str:
        if self.template is None:
            return "\n".join(row[c] for c in self.text_columns)
        return self.template.format(**{c: row[c] for c in self.text_columns})


def register_task(task: Task) -> Task:
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} is already registered")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    if name not in TASKS:
        hint = difflib.get_close_matches(name, TASKS, n=1)
        raise ConfigError(f"unknown task {name!r}{f' (did you mean {hint[0]!r}?)' if hint else ''}; choose from {sorted(TASKS)}")
    return TASKS[name]


from . import e2e, glue  # noqa: E402,F401  registers the GLUE tasks, sms_spam and e2e

__all__ = ["TASKS", "Task", "get_task", "register_task"]
