"""Running a sweep on an Optuna study: every planned run is an enqueued trial, and exactly one worker claims it.

Optuna's GridSampler may hand the same grid point to two workers started together, so the grid is enqueued
instead: the worker that creates the study enqueues one WAITING trial per run, and a worker claims a trial by
moving it from WAITING to RUNNING in one locked transaction (Optuna's own check-and-set, made atomic on SQLite
by `serialize_sqlite_transactions`). While it trains, a thread records heartbeats; a worker killed outright
stops beating, the next worker that looks fails its trial and enqueues it again, and the retry resumes from the
run directory's last checkpoint. A run's record is stored with the trial's COMPLETE state, so a finished run is
never redone and no reader sees half a result.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import DuplicatedStudyError, ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import RDBStorage, fail_stale_trials
from optuna.study import StudyDirection
from optuna.trial import TrialState

from ..errors import ConfigError
from ..training import RunFailed, train, train_parser
from .spec import PlannedRun, Search, Sweep

logger = logging.getLogger(__name__)

RECORD_ATTR, RUN_ATTR, SLOT_ATTR = "record", "run_id", "slot"
PLANNED_ATTR = "suffixtune:planned_runs"


def run_directory(output_dir: str | os.PathLike, run: PlannedRun, slot: int | None = None) -> Path:
    """`output_dir/runs/<name>-<id>[-<search slot>]`: readable, and unique even where names collide."""
    slug = run.name.replace(",", "_").replace("=", "-").replace("/", "-") or "run"
    return Path(output_dir) / "runs" / (f"{slug}-{run.run_id}" + ("" if slot is None else f"-{slot}"))


def planned_units(sweep: Sweep) -> list[tuple[PlannedRun, int | None]]:
    """Each run, or with a search each run's `trials` slots, in order."""
    slots = range(sweep.search.trials) if sweep.search else [None]
    return [(run, slot) for run in sweep.runs() for slot in slots]


def unit_key(run: PlannedRun, slot: int | None) -> str:
    return run.run_id if slot is None else f"{run.run_id}-{slot}"


def prepare_study(sweep: Sweep, storage: RDBStorage, wait_s: float = 60.0) -> optuna.Study:
    """Create the sweep's study with one WAITING trial per run, or load it; the creator alone enqueues."""
    units = planned_units(sweep)
    try:
        storage.create_new_study([StudyDirection.MAXIMIZE], sweep.name)
        created = True
    except DuplicatedStudyError:
        created = False
    study = optuna.load_study(study_name=sweep.name, storage=storage)
    study_id = storage.get_study_id_from_name(sweep.name)
    if created:
        for run, slot in units:
            study.enqueue_trial({}, user_attrs={RUN_ATTR: run.run_id, SLOT_ATTR: slot, "name": run.name})
        storage.set_study_system_attr(study_id, PLANNED_ATTR, [unit_key(*unit) for unit in units])
    deadline = time.monotonic() + wait_s
    while (planned := storage.get_study_system_attrs(study_id).get(PLANNED_ATTR)) is None:
        if time.monotonic() > deadline:
            raise ConfigError(f"study {sweep.name!r} exists but its runs were never enqueued (its creator stopped "
                              "while enqueueing); delete the study (optuna delete-study) and start again")
        time.sleep(0.5)
    if set(planned) != {unit_key(*unit) for unit in units}:
        raise ConfigError(f"{sweep.source}: the sweep plans other runs than study {sweep.name!r} in this storage "
                          f"({len(units)} now, {len(planned)} when it started); give the changed sweep a new name")
    return study


def unfinished_units(study: optuna.Study) -> dict[str, optuna.trial.FrozenTrial]:
    """The last trial of each unit (run or search slot) that no trial has completed and none is waiting or running."""
    by_unit: dict[str, list] = {}
    for trial in study.get_trials(deepcopy=False):
        by_unit.setdefault(f"{trial.user_attrs[RUN_ATTR]}/{trial.user_attrs.get(SLOT_ATTR)}", []).append(trial)
    live = (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING)
    return {unit: trials[-1] for unit, trials in by_unit.items() if not any(t.state in live for t in trials)}


def retry_failed(study: optuna.Study) -> int:
    """Enqueue once more every run whose trials all failed; run it from one worker, before the others start."""
    failed = unfinished_units(study)
    for trial in failed.values():
        study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, params=trial.params,
                                                  distributions=trial.distributions, user_attrs={
                                                      k: v for k, v in trial.user_attrs.items() if k != RECORD_ATTR}))
    return len(failed)


def claim(storage: RDBStorage, study_id: int) -> int | None:
    """Move one WAITING trial to RUNNING and return its id; False from the storage means another worker took it."""
    for frozen in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
        try:
            if storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                storage.record_heartbeat(trial_id)
                return trial_id
        except UpdateFinishedTrialError:
            continue
    return None


@contextmanager
def heartbeat(storage: RDBStorage, trial_id: int) -> Iterator[None]:
    stop = threading.Event()

    def beat():
        while not stop.wait(storage.heartbeat_interval):
            try:
                storage.record_heartbeat(trial_id)
            except Exception as error:  # a dropped connection must not kill the run; the next beat retries
                logger.warning("heartbeat of trial %d failed: %s", trial_id, error)

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def work(sweep: Sweep, storage: RDBStorage, output_dir: str | os.PathLike, poll_s: float | None = None) -> int:
    """Claim and do runs until every run is finished; returns how many this worker did."""
    study = prepare_study(sweep, storage)
    study_id = storage.get_study_id_from_name(sweep.name)
    runs = {run.run_id: run for run in sweep.runs()}
    poll_s = poll_s or min(storage.heartbeat_interval or 5, 5)
    worker, done = f"{socket.gethostname()}:{os.getpid()}", 0
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # fail_stale_trials: in Optuna since 2.9
            fail_stale_trials(study)
        trial_id = claim(storage, study_id)
        if trial_id is None:
            if not study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)):
                return done
            time.sleep(poll_s)  # others are running; one of them may die and its run come back
            continue
        claimed = storage.get_trial(trial_id)
        run, slot = runs[claimed.user_attrs[RUN_ATTR]], claimed.user_attrs.get(SLOT_ATTR)
        storage.set_trial_user_attr(trial_id, "worker", worker)
        if sweep.search:
            run = run.with_settings(claimed.params or draw(study, storage, trial_id, run.run_id, sweep.search))
        logger.info("%s: run %s (%s) started", worker, unit_key(run, slot), run.name)
        with heartbeat(storage, trial_id):
            state, value, record = do_run(run, slot, run_directory(output_dir, run, slot))
        try:
            storage.set_trial_user_attr(trial_id, RECORD_ATTR, record)
            storage.set_trial_state_values(trial_id, state, None if value is None else [value])
        except UpdateFinishedTrialError:
            logger.warning("%s: run %s was failed as stale while it ran; its retry keeps its directory", worker, run.run_id)
            continue
        done += 1
        logger.info("%s: run %s %s%s", worker, unit_key(run, slot), state.name.lower(), "" if value is None else f" ({value:.4f})")


def draw(study: optuna.Study, storage: RDBStorage, trial_id: int, run_id: str, search: Search) -> dict[str, Any]:
    """The search's settings for this trial, drawn by its sampler from the finished trials of the same grid cell.

    The draw is stored as the trial's params, so a retry of the trial trains with the same values.
    """
    distributions = search.distributions()
    history = [trial for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
               if trial.user_attrs.get(RUN_ATTR) == run_id and trial.params]
    number = storage.get_trial(trial_id).number
    cell = optuna.create_study(direction="maximize", sampler=search.make_sampler(seed=number))
    cell.add_trials(history)
    drawn = cell.ask(distributions).params
    for name, distribution in distributions.items():
        storage.set_trial_param(trial_id, name, distribution.to_internal_repr(drawn[name]), distribution)
    return drawn


def do_run(run: PlannedRun, slot: int | None, directory: Path) -> tuple[TrialState, float | None, dict[str, Any]]:
    """Train the run in this process (resuming from its last checkpoint), or take the record it already wrote."""
    record_path = directory / "metrics.json"
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        logger.warning("run %s: %s was written before (by a worker that stopped before storing it, or for another "
                       "storage); storing it instead of training again", run.run_id, record_path)
    else:
        method = run.settings.get("method", "suffix")
        parsed = train_parser(method).parse_args_into_dataclasses([*run.to_argv(), "--output_dir", str(directory)])
        try:
            record = train(*parsed)
        except RunFailed:
            record = json.loads(record_path.read_text())
        except Exception as error:
            logger.exception("run %s failed", run.run_id)
            return TrialState.FAIL, None, {"status": "error", "failure": f"{type(error).__name__}: {error}"}
    record = {**record, "run_id": unit_key(run, slot), "cell_id": run.run_id, "slot": slot, "name": run.name,
              "settings": dict(run.settings), "directory": str(directory)}
    return TrialState.COMPLETE, main_metric(record), record


def main_metric(record: dict[str, Any]) -> float | None:
    """The task's first metric on the evaluation split, the trial's value."""
    name = record["config"]["training"]["metric_for_best_model"]
    return record["eval"].get(name, record["eval"].get(f"eval_{name}"))


def launch_workers(argv: list[str], workers: int) -> int:
    """Start `workers` copies of this command with --workers 1, one GPU each where there are enough."""
    import torch

    gpus = torch.cuda.device_count() if "CUDA_VISIBLE_DEVICES" not in os.environ else 0
    threads = max(1, (os.cpu_count() or 1) // workers)
    processes = []
    for index in range(workers):
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads))}
        if gpus >= workers:
            env["CUDA_VISIBLE_DEVICES"] = str(index)
        command = [sys.executable, "-m", "suffixtune.cli", "sweep", "run", *argv, "--workers", "1"]
        processes.append(subprocess.Popen(command, env=env))
    try:
        codes = [process.wait() for process in processes]
    except KeyboardInterrupt:
        for process in processes:
            process.terminate()
        raise
    return max(codes)
