"""The artifact format: a JSON config naming the base model, method and head, plus the trained weights only."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ArtifactError
from .tasks import TASKS, Task

CONFIG_NAME = "suffixtune_config.json"
WEIGHTS_NAME = "suffixtune_model.safetensors"


@dataclass
class ClassifierConfig:
    """Everything needed to rebuild a classifier on its base model; stored as the artifact's JSON."""

    base_model: str
    base_model_hash: str
    hidden_size: int
    method: str
    method_config: dict[str, Any]
    head: str
    task: str
    label_names: list[str] | None  # None: regression
    num_labels: int = 0  # derived from label_names; stored so the JSON says it
    label_words: list[str] | None = None
    text_columns: list[str] = field(default_factory=lambda: ["text"])
    label_column: str = "label"
    metrics: list[str] = field(default_factory=lambda: ["accuracy"])
    template: str | None = None
    max_length: int = 256
    pooling: str = "last"
    suffixtune_version: str = ""
    tokenizer_hash: str | None = None  # None: saved before tokenizers were checked
    task_kind: str = "classification"
    target_column: str | None = None  # generation: the column of references
    render: str | None = None  # generation: how sources are written (`tasks.RENDERERS`)
    max_target_length: int | None = None  # generation: the target's room, which a long source never takes

    def __post_init__(self):
        expected = 0 if self.task_kind == "generation" else 1 if self.label_names is None else len(self.label_names)
        if self.num_labels not in (0, expected):
            raise ArtifactError(f"num_labels {self.num_labels} does not match label names {self.label_names}")
        self.num_labels = expected

    def as_task(self) -> Task:
        """The task as trained; a built-in task's files keep their own column names (e.g. SMS spam's `Text`)."""
        known = TASKS.get(self.task)
        same_columns = known is not None and (known.text_columns, known.label_column, known.target_column) == (
            tuple(self.text_columns), self.label_column, self.target_column)
        return Task(
            name=self.task, text_columns=tuple(self.text_columns), template=self.template,
            label_column=self.label_column, metrics=tuple(self.metrics),
            label_names=None if self.label_names is None else tuple(self.label_names),
            label_words=None if self.label_words is None else tuple(self.label_words),
            kind=self.task_kind, target_column=self.target_column, render=self.render,
            rename=known.rename if same_columns else {},
        )


def config_digest(saved: dict[str, Any]) -> str:
    """Hash of a config's fields as saved, bar the base model's path (moving the model is fine: its weights are
    hashed) and the version that wrote it. Fields a later version adds are not in an older file, so not hashed."""
    fields = {key: value for key, value in saved.items() if key not in ("base_model", "suffixtune_version")}
    return hashlib.blake2b(json.dumps(fields, sort_keys=True).encode(), digest_size=16).hexdigest()


def saved_config_fields(directory: str | os.PathLike) -> dict[str, Any]:
    """The config's fields exactly as the artifact's JSON holds them."""
    return json.loads((Path(directory) / CONFIG_NAME).read_text())


def read_config(directory: str | os.PathLike) -> ClassifierConfig:
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise ArtifactError(f"{directory}: not a suffixtune artifact (no {CONFIG_NAME})")
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ArtifactError(f"{path}: malformed artifact config ({error})") from None
    if not isinstance(saved, dict):
        raise ArtifactError(f"{path}: malformed artifact config (a JSON {type(saved).__name__}, not an object)")
    names = {f.name for f in fields(ClassifierConfig)}
    needed = [f.name for f in fields(ClassifierConfig) if f.default is MISSING and f.default_factory is MISSING]
    missing, unknown = [n for n in needed if n not in saved], sorted(set(saved) - names)
    problems = [f"missing field(s) {missing}"] if missing else []
    if unknown:
        problems.append(f"unknown field(s) {unknown} (written by a newer suffixtune?)")
    if problems:
        raise ArtifactError(f"{path}: malformed artifact config ({'; '.join(problems)})")
    return ClassifierConfig(**saved)


def cache_dir() -> Path:
    """Where suffixtune keeps what it can rebuild (converted bundled models, text caches, the train flags):
    $SUFFIXTUNE_CACHE, else $XDG_CACHE_HOME/suffixtune."""
    if "SUFFIXTUNE_CACHE" in os.environ:
        return Path(os.environ["SUFFIXTUNE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "suffixtune"


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Call `write(staging_path)`, then move the file into place, so readers never see half a file."""
    handle, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    os.close(handle)
    try:
        write(staging)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o666 & ~umask)
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.remove(staging)


def write_config(config: ClassifierConfig, directory: Path) -> None:
    text = json.dumps(asdict(config), indent=2)
    atomic_write(directory / CONFIG_NAME, lambda path: Path(path).write_text(text))


def write_json(data: dict[str, Any], path: Path) -> None:
    text = json.dumps(data, indent=2, default=str)
    atomic_write(path, lambda staging: Path(staging).write_text(text))
