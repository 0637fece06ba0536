"""The results store: every finished sweep run's record, read back from the Optuna storage as pandas DataFrames."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from .artifacts import atomic_write
from .errors import ConfigError
from .methods import METHODS
from .sweeps.runner import RECORD_ATTR
from .sweeps.storage import open_storage

SETTING_COLUMNS = ("model", "task", "method", "prompt_length", "seed", "learning_rate", "head", "max_train_samples")
NO_PROMPT = {"has_prompt_vectors": False, "adds_prompt_positions": False, "report_order": None}


def storage_url(storage: str | os.PathLike) -> str:
    """A URL as is; a sweep.db file or a sweep directory holding one as its SQLite URL."""
    path = Path(storage)
    if "://" not in str(storage):
        path = path / "sweep.db" if path.is_dir() else path
        if not path.is_file():
            raise ConfigError(f"{storage}: no sweep storage there; pass a storage URL, a sweep.db or the sweep's directory")
        return f"sqlite:///{path.resolve()}"
    return str(storage)


def load(storage: str | os.PathLike, study: str | None = None, per_epoch: bool = False) -> pd.DataFrame:
    """One row per finished run (or, with per_epoch, per run and evaluation) of every study or of `study`.

    Columns: study, run_id, name, status, the run's settings (model, task, method, prompt_length, seed, ...), its
    method's facts (has_prompt_vectors, adds_prompt_positions, report_order), its evaluation metrics,
    trainable_parameters, train_samples_per_second, peak_memory_bytes, wall_time_s, versions and commit, and
    `record`, the run's whole metrics.json.
    """
    rdb = open_storage(storage_url(storage), heartbeat_interval=None)
    names = [s.study_name for s in optuna.get_all_study_summaries(rdb, include_best_trial=False)]
    if study is not None and study not in names:
        raise ConfigError(f"no study {study!r} in {storage}; it holds {names}")
    rows: list[dict[str, Any]] = []
    for name in [study] if study else names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            trials = optuna.load_study(study_name=name, storage=rdb).get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        for trial in trials:
            record = trial.user_attrs.get(RECORD_ATTR)
            if record is not None:
                rows.extend(epoch_rows(name, record) if per_epoch else [run_row(name, record)])
    return pd.DataFrame(rows)


def run_row(study: str, record: dict[str, Any]) -> dict[str, Any]:
    settings = record.get("settings", {})
    row = {"study": study, "run_id": record["run_id"], "cell_id": record.get("cell_id", record["run_id"]),
           "slot": record.get("slot"), "name": record["name"], "status": record["status"], "failure": record.get("failure")}
    row |= {key: settings.get(key, resolved_setting(record, key)) for key in SETTING_COLUMNS}
    row |= {key: value for key, value in settings.items() if key not in row}
    row |= method_facts(record)
    if not row["adds_prompt_positions"]:
        row["prompt_length"] = None
    row |= {key.removeprefix("eval_"): value for key, value in record["eval"].items()}
    row["did_not_learn"] = bool(record.get("did_not_learn"))
    row |= {key: record.get(key) for key in ("trainable_parameters", "total_parameters", "train_rows", "eval_rows",
                                             "train_samples_per_second", "train_tokens_per_second", "train_runtime_s",
                                             "wall_time_s", "peak_memory_bytes", "directory")}
    versions = record.get("versions", {})
    machine = record.get("machine") or {}
    row |= {"commit": versions.get("suffixtune_commit"), "machine": machine.get("accelerator") or machine.get("cpu"),
            "versions": versions, "record": record}
    return row


def method_facts(record: dict[str, Any]) -> dict[str, Any]:
    """The run's method facts as recorded; for records older than that, the registered method's; else no prompt."""
    if "method_facts" in record:
        return record["method_facts"]
    method = METHODS.get(record["method"])
    return NO_PROMPT if method is None else method.facts()


def resolved_setting(record: dict[str, Any], key: str) -> Any:
    """A setting the sweep left at its default, as the run resolved it (task, learning_rate, prompt_length, ...)."""
    if record.get(key) is not None:
        return record[key]
    config = record.get("config", {})
    for section in ("model", "data", "method", "method_config", "training"):
        if config.get(section, {}).get(key) is not None:
            return config[section][key]
    return None


def best_per_cell(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The best run of each grid cell by `metric`: what a search selects on the evaluation split."""
    if frame.empty or frame["slot"].isna().all():
        return frame
    return frame.loc[frame.groupby(["study", "cell_id"])[metric].idxmax()].reset_index(drop=True)


def epoch_rows(study: str, record: dict[str, Any]) -> list[dict[str, Any]]:
    base = {key: value for key, value in run_row(study, record).items() if key not in ("record", "versions")}
    return [
        {**base, "epoch": entry.get("epoch"), "step": entry.get("step"),
         **{key.removeprefix("eval_"): value for key, value in entry.items() if key.startswith("eval_")}}
        for entry in record.get("epochs", [])
    ]


def export(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write `frame` as CSV or Parquet by the file's suffix, atomically; nested values become JSON strings."""
    path = Path(path)
    flat = frame.copy()
    for column in flat.columns:
        if flat[column].map(lambda v: isinstance(v, dict | list)).any():
            flat[column] = flat[column].map(lambda v: json.dumps(v, default=str) if isinstance(v, dict | list) else v)
    writers = {".csv": lambda p: flat.to_csv(p, index=False), ".parquet": lambda p: flat.to_parquet(p, index=False)}
    if path.suffix not in writers:
        raise ConfigError(f"{path}: export to .csv or .parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, writers[path.suffix])
    return path
