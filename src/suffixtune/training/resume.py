"""A run directory resumes only the run it holds: the resolved settings are stored with it and every checkpoint."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from ..artifacts import CONFIG_NAME, WEIGHTS_NAME, write_json
from ..errors import ConfigError

logger = logging.getLogger(__name__)

SETTINGS_NAME = "suffixtune_run_settings.json"
RECORD_NAME = "metrics.json"
# Flags that change where output goes, what is logged or how fast it runs, never what is trained.
FREE_TO_CHANGE = {
    "output_dir", "overwrite_output_dir", "resume_from_checkpoint", "disable_tqdm", "report_to", "run_name", "project",
    "logging_dir", "logging_steps", "logging_strategy", "logging_first_step", "logging_nan_inf_filter", "log_level",
    "log_level_replica", "log_on_each_node", "per_device_eval_batch_size", "eval_accumulation_steps", "save_steps",
    "save_strategy", "save_total_limit", "save_only_model", "save_on_each_node", "skip_memory_metrics",
    "dataloader_num_workers", "dataloader_pin_memory", "dataloader_persistent_workers", "dataloader_prefetch_factor",
    "text_cache", "text_cache_budget", "text_cache_dir", "local_rank", "ddp_timeout", "debug", "torch_empty_cache_steps",
    "trackio_space_id", "trackio_bucket_id", "trackio_static_space_id",
}
# Groups whose settings decide the shape and meaning of the trained state: never changed on a resume.
STATE_GROUPS = ("model", "data", "method", "method_config")


@contextlib.contextmanager
def run_directory_lock(args) -> Iterator[None]:
    """Hold an exclusive lock on the run directory while training, so a second run into it is refused, not mixed in."""
    if args.output_dir is None or args.process_index != 0 or (Path(args.output_dir).exists() and not Path(args.output_dir).is_dir()):
        yield
        return
    os.makedirs(args.output_dir, exist_ok=True)
    handle = os.open(args.output_dir, os.O_RDONLY)
    try:
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no flock (Windows): run unguarded
            pass
        except BlockingIOError:
            raise ConfigError(f"--output {args.output_dir}: another suffixtune train is writing there now; wait for it, "
                              "or give another --output") from None
        yield
    finally:
        os.close(handle)  # closing releases the lock; so does the process's end, however it ends


def run_settings(model_args, data_args, method_args, method_config, args, decoding=None) -> dict[str, dict[str, Any]]:
    """The resolved settings that decide what a run trains (and, for generation, how it decodes to choose the best
    checkpoint), per group, as JSON would store them."""
    groups = {
        "model": asdict(model_args), "data": asdict(data_args), "method": asdict(method_args),
        "method_config": method_config.to_dict(), "training": args.to_dict(),
    }
    if decoding is not None:
        groups["decoding"] = asdict(decoding)
    kept = {group: {k: v for k, v in values.items() if k not in FREE_TO_CHANGE and not k.startswith("hub_")}
            for group, values in groups.items()}
    return json.loads(json.dumps(kept, default=str))


def differences(stored: dict, settings: dict) -> list[tuple[str, str, Any, Any]]:
    """(group, flag, stored value, value now) for every setting that differs."""
    return [
        (group, name, stored.get(group, {}).get(name), values.get(name))
        for group, values in settings.items()
        for name in sorted(set(values) | set(stored.get(group, {})))
        if stored.get(group, {}).get(name) != values.get(name)
    ]


def describe(changes: list[tuple[str, str, Any, Any]]) -> str:
    return ", ".join(f"--{name} {old!r} (stored) vs {new!r} (now)" for _, name, old, new in changes)


def read_settings(directory: Path) -> dict | None:
    path = directory / SETTINGS_NAME
    return json.loads(path.read_text()) if path.is_file() else None


def holds_run(directory: Path) -> bool:
    """A checkpoint, record or artifact is there (settings alone are left by a run that stopped before saving)."""
    if not directory.is_dir():
        return False
    return any((directory / name).exists() for name in (RECORD_NAME, CONFIG_NAME, WEIGHTS_NAME)) or get_last_checkpoint(directory) is not None


def clear_run(directory: Path) -> None:
    """Remove what an earlier run left in `directory`: its checkpoints, record, artifact and settings."""
    if not directory.is_dir():
        return
    for checkpoint in directory.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        shutil.rmtree(checkpoint)
    for name in (SETTINGS_NAME, RECORD_NAME, CONFIG_NAME, WEIGHTS_NAME):
        (directory / name).unlink(missing_ok=True)


def prepare_run_directory(args, settings: dict) -> tuple[str | None, list[tuple[str, str, Any, Any]]]:
    """The checkpoint to resume (None: start afresh) and the training settings changed on purpose since it.

    A directory holding a run with other settings is refused, naming them, unless --overwrite_output_dir clears it
    or --resume_from_checkpoint asks to go on from a checkpoint with other training settings.
    """
    directory, main_process = Path(args.output_dir), args.process_index == 0
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"--output {directory} is a file; a run needs a directory (a new name, or an existing run's)")
    explicit = args.resume_from_checkpoint
    if explicit is not None and str(explicit).lower() in ("false", "0", "", "none"):
        explicit = None
    if explicit is not None and str(explicit).lower() in ("true", "1"):
        explicit = get_last_checkpoint(directory) if directory.is_dir() else None
        if explicit is None:
            raise ConfigError(f"--resume_from_checkpoint true: {directory} holds no checkpoint to resume")
    if args.overwrite_output_dir and explicit is None:
        if main_process:
            clear_run(directory)
            write_settings(directory, settings)
        return None, []
    if explicit is not None:
        checkpoint = Path(explicit)
        if not checkpoint.is_dir():
            raise ConfigError(f"--resume_from_checkpoint {checkpoint}: no such checkpoint directory")
        stored = read_settings(checkpoint)
        if stored is None:
            logger.warning("%s records no settings (an older suffixtune wrote it); resuming it as asked", checkpoint)
            return str(checkpoint), []
        changes = differences(stored, settings)
        fixed = [change for change in changes if change[0] in STATE_GROUPS]
        if fixed:
            raise ConfigError(
                f"{checkpoint} was trained with other settings of the model, data or method: {describe(fixed)}; a checkpoint "
                "resumes only with the same ones (training settings such as --max_steps may change)"
            )
        if changes:
            logger.warning("resuming %s with changed training settings: %s", checkpoint, describe(changes))
        if main_process:
            write_settings(directory, settings)
        return str(checkpoint), changes
    if not holds_run(directory):
        if main_process:
            write_settings(directory, settings)
        return None, []
    last = get_last_checkpoint(directory)
    stored = (read_settings(Path(last)) if last else None) or read_settings(directory)  # killed before on_save wrote it
    what = f"{directory} holds a run" + (f" (last checkpoint {Path(last).name})" if last else "")
    if stored is None:
        resume_hint = f", or --resume_from_checkpoint {last} to resume it on purpose" if last else ""
        raise ConfigError(
            f"{what} whose settings are not recorded; pass --overwrite_output_dir true to start afresh there, or "
            f"another --output{resume_hint}"
        )
    changes = differences(stored, settings)
    if changes:
        raise ConfigError(
            f"{what} with other settings: {describe(changes)}. Pass --overwrite_output_dir true to start afresh there "
            "(its checkpoints and record are removed), another --output, or --resume_from_checkpoint CHECKPOINT to "
            "go on from it with new training settings on purpose"
        )
    if last is None:  # its artifact and record stay until this run replaces them
        logger.warning("%s: an earlier run with the same settings left no checkpoint; starting afresh", directory)
    return last, []


def write_settings(directory: Path, settings: dict) -> None:
    os.makedirs(directory, exist_ok=True)
    write_json(settings, directory / SETTINGS_NAME)


class RunSettingsCallback(TrainerCallback):
    """Stores the run's settings in every checkpoint, so a checkpoint says what it continues."""

    def __init__(self, settings: dict):
        self.settings = settings

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if state.is_world_process_zero and checkpoint.is_dir():
            write_json(self.settings, checkpoint / SETTINGS_NAME)
