"""`suffixtune sweep run`: workers share one Optuna storage, each run is done once, and a killed worker's run is retried."""

from __future__ import annotations

import collections
import concurrent.futures
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import write_toy_csv
from suffixtune import results
from suffixtune.cli import main
from suffixtune.sweeps import load_sweep
from suffixtune.sweeps.runner import RUN_ATTR
from suffixtune.sweeps.storage import StorageError, open_storage

pytestmark = pytest.mark.slow


def write_sweep(directory: Path, model_dir: Path, epochs: int = 2, methods=("suffix", "prefix", "head")) -> Path:
    write_toy_csv(directory / "train.csv", rows=48, seed=0)
    write_toy_csv(directory / "validation.csv", rows=16, seed=1)
    path = directory / "sweep.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: tiny
        fixed:
          model: {model_dir}
          train: {directory / 'train.csv'}
          validation: {directory / 'validation.csv'}
          text_column: text
          num_train_epochs: {epochs}
          per_device_train_batch_size: 16
          disable_tqdm: true
        grid:
          method: [{', '.join(methods)}]
          prompt_length: [1, 3]
          seed: [0]
        """))
    return path


def worker_command(sweep: Path, output: Path, storage: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "suffixtune.cli", "sweep", "run", str(sweep), "--output-dir", str(output),
            "--storage", storage, *extra]


def trials_by_run(storage_url: str) -> dict[str, list[TrialState]]:
    study = optuna.load_study(study_name="tiny", storage=open_storage(storage_url, heartbeat_interval=None))
    states = collections.defaultdict(list)
    for trial in study.get_trials(deepcopy=False):
        states[trial.user_attrs[RUN_ATTR]].append(trial.state)
    return dict(states)


def assert_each_run_done_once(sweep: Path, storage_url: str, output: Path) -> None:
    planned = {run.run_id for run in load_sweep(sweep).runs()}
    states = trials_by_run(storage_url)
    assert set(states) == planned
    for run_id, run_states in states.items():
        assert run_states.count(TrialState.COMPLETE) == 1, (run_id, run_states)
    frame = results.load(storage_url)
    assert sorted(frame["run_id"]) == sorted(planned)
    assert (frame["status"] == "ok").all() and frame["accuracy"].between(0, 1).all()
    assert all(Path(directory, "metrics.json").is_file() for directory in frame["directory"])
    assert all(machine and machine in Path("/proc/cpuinfo").read_text() for machine in frame["machine"])  # seeds reproduce per CPU
    assert len(list((output / "runs").iterdir())) == len(planned)


def test_two_workers_on_sqlite_do_every_run_once(tmp_path, tiny_model_dir):
    sweep, output = write_sweep(tmp_path, tiny_model_dir), tmp_path / "out"
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    assert main(["sweep", "run", str(sweep), "--output-dir", str(output), "--storage", url, "--workers", "2"]) == 0
    assert_each_run_done_once(sweep, url, output)
    epochs = results.load(url, per_epoch=True)
    assert sorted(epochs.groupby("run_id")["epoch"].apply(list).iloc[0]) == [1.0, 2.0]

    before = trials_by_run(url)
    assert main(["sweep", "run", str(sweep), "--output-dir", str(output), "--storage", url]) == 0  # nothing left to do
    assert trials_by_run(url) == before

    records = {path: path.stat().st_mtime_ns for path in output.glob("runs/*/metrics.json")}
    lost = f"sqlite:///{tmp_path / 'new.db'}"  # the storage is gone, the run directories are not (or were copied)
    assert main(["sweep", "run", str(sweep), "--output-dir", str(output), "--storage", lost]) == 0
    assert {path: path.stat().st_mtime_ns for path in output.glob("runs/*/metrics.json")} == records  # none retrained
    stored = [results.load(storage).set_index("run_id")["accuracy"].to_dict() for storage in (url, lost)]
    assert stored[0] == stored[1] and len(stored[1]) == len(records)


def test_a_killed_worker_loses_only_its_run_which_the_next_worker_retries(tmp_path, tiny_model_dir):
    sweep, output = write_sweep(tmp_path, tiny_model_dir, epochs=40, methods=("suffix",)), tmp_path / "out"
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    victim = subprocess.Popen(worker_command(sweep, output, url, "--heartbeat", "1", "--grace-period", "2"),
                              stderr=subprocess.PIPE, text=True)
    for line in victim.stderr:  # blocks until the worker has claimed a run and started training it
        if " started" in line:
            break
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed = {run for run, states in trials_by_run(url).items() if states == [TrialState.RUNNING]}
    assert len(killed) == 1

    assert main(["sweep", "run", str(sweep), "--output-dir", str(output), "--storage", url,
                 "--heartbeat", "1", "--grace-period", "2"]) == 0
    states = trials_by_run(url)
    assert states[killed.pop()] == [TrialState.FAIL, TrialState.COMPLETE]  # failed as stale, then retried once
    assert_each_run_done_once(sweep, url, output)


def test_a_learning_rate_search_draws_each_trial_from_its_cell_and_reports_the_best(tmp_path, tiny_model_dir):
    sweep = write_sweep(tmp_path, tiny_model_dir, methods=("suffix",))
    sweep.write_text(sweep.read_text().replace("prompt_length: [1, 3]", "prompt_length: [2]")
                     + "search:\n  sampler: random\n  trials: 3\n  space:\n    learning_rate: {low: 0.0001, high: 0.3, log: true}\n")
    output, url = tmp_path / "out", f"sqlite:///{tmp_path / 'sweep.db'}"
    assert main(["sweep", "run", str(sweep), "--output-dir", str(output), "--storage", url]) == 0
    frame = results.load(url)
    assert len(frame) == 3 and frame["cell_id"].nunique() == 1 and sorted(frame["slot"]) == [0, 1, 2]
    assert frame["learning_rate"].nunique() == 3 and frame["learning_rate"].between(1e-4, 0.3).all()
    for _, run in frame.iterrows():  # the drawn value is the one the run trained with
        assert run["record"]["config"]["training"]["learning_rate"] == run["learning_rate"]
    best = results.best_per_cell(frame, "accuracy")
    assert len(best) == 1 and best["accuracy"].iloc[0] == frame["accuracy"].max()
    assert main(["report", "--storage", url, "--out", str(tmp_path / "report"), "--no-inspect"]) == 0
    assert "its best of 3 runs" in (tmp_path / "report" / "report.md").read_text()


def test_a_run_that_raises_is_recorded_failed_and_retry_failed_runs_it_again(tmp_path, tiny_model_dir, capsys):
    sweep = write_sweep(tmp_path, tiny_model_dir, methods=("suffix",))
    sweep.write_text(sweep.read_text().replace("prompt_length: [1, 3]", "prompt_length: [1]"))
    (tmp_path / "train.csv").rename(tmp_path / "train.kept")
    output, url = tmp_path / "out", f"sqlite:///{tmp_path / 'sweep.db'}"
    assert main(["sweep", "run", str(sweep), "--output-dir", str(output), "--storage", url]) == 3
    assert "1 runs failed" in capsys.readouterr().err
    assert list(trials_by_run(url).values()) == [[TrialState.FAIL]]
    study = optuna.load_study(study_name="tiny", storage=open_storage(url, heartbeat_interval=None))
    assert "train.csv" in study.trials[0].user_attrs["record"]["failure"]

    (tmp_path / "train.kept").rename(tmp_path / "train.csv")
    assert main(["sweep", "run", str(sweep), "--output-dir", str(output), "--storage", url]) == 3  # failed stays failed
    assert main(["sweep", "run", str(sweep), "--output-dir", str(output), "--storage", url, "--retry-failed"]) == 0
    assert list(trials_by_run(url).values()) == [[TrialState.FAIL, TrialState.COMPLETE]]


def test_an_unreachable_storage_fails_fast_naming_it_without_the_password(tmp_path, tiny_model_dir):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    url = f"postgresql://researcher:hunter2@127.0.0.1:{port}/sweeps"
    with pytest.raises(StorageError) as error:
        open_storage(url)
    assert f"researcher:***@127.0.0.1:{port}/sweeps" in str(error.value) and "hunter2" not in str(error.value)
    with pytest.raises(StorageError, match="not a database URL"):
        open_storage("localhost:5432")
    with pytest.raises(StorageError, match="does not exist"):
        open_storage(f"sqlite:///{tmp_path / 'missing' / 'sweep.db'}")


def postgres_binaries() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return candidates[-1].parent if candidates else None


@pytest.fixture
def postgres_url():
    """A PostgreSQL server of its own in a temporary directory, stopped afterwards."""
    binaries = postgres_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; `apt-get install postgresql` runs this test")
    pytest.importorskip("psycopg", reason="the PostgreSQL driver is missing: pip install 'suffixtune[postgres]'")
    as_user: list[str] = []
    directory = Path(tempfile.mkdtemp(prefix="suffixtune-pg-"))
    if os.geteuid() == 0:  # the server refuses to run as root
        user = pwd.getpwnam("postgres")
        os.chown(directory, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    data = directory / "data"
    subprocess.run([*as_user, binaries / "initdb", "-D", data, "-A", "trust", "-U", "sweeper"], check=True, capture_output=True)
    options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1"
    subprocess.run([*as_user, binaries / "pg_ctl", "-D", data, "-o", options, "-l", directory / "log", "-w", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql://sweeper:secret@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, binaries / "pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)


def test_workers_on_postgresql_do_every_run_once(tmp_path, tiny_model_dir, postgres_url):
    sweep, output = write_sweep(tmp_path, tiny_model_dir), tmp_path / "out"
    workers = [subprocess.Popen(worker_command(sweep, output, postgres_url), stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    errors = [worker.communicate()[1] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], "\n".join(e[-2000:] for e in errors)
    assert_each_run_done_once(sweep, postgres_url, output)


def test_workers_opening_an_empty_postgresql_database_together_all_connect(postgres_url):
    """Eight workers racing to create Optuna's tables: each gets a storage, none a duplicate-table error."""
    opened_together = threading.Barrier(8)

    def open_after_barrier(_):
        opened_together.wait()
        return open_storage(postgres_url, heartbeat_interval=None)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        storages = list(pool.map(open_after_barrier, range(8)))
    storages[0].create_new_study([], "shared")
    assert [storage.get_study_id_from_name("shared") for storage in storages] == [1] * 8
    for storage in storages:
        storage.engine.dispose()
