"""One run on several processes through torchrun (Trainer's DDP), here two CPU processes over gloo."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import write_toy_csv


@pytest.mark.slow
def test_torchrun_trains_one_run_on_two_processes_and_one_of_them_writes_and_prints(tiny_model_dir, tmp_path):
    train = write_toy_csv(tmp_path / "train.csv", rows=64, seed=0)
    validation = write_toy_csv(tmp_path / "validation.csv", rows=32, seed=1)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "suffixtune.cli", "train",
        "--model", str(tiny_model_dir), "--train", str(train), "--validation", str(validation), "--text_column", "text",
        "--output", str(tmp_path / "run"), "--num_train_epochs", "2", "--per_device_train_batch_size", "8",
        "--use_cpu", "true", "--ddp_backend", "gloo", "--disable_tqdm", "true",
    ]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    result_lines = [line for line in finished.stdout.splitlines() if '"output"' in line]
    assert len(result_lines) == 1, finished.stdout[-3000:]  # the main process prints, on a line of its own
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert json.loads(result_lines[0]) == {"output": str(tmp_path / "run"), "status": record["status"], **record["eval"]}
    assert record["processes"] == 2
    assert record["epochs"][-1]["step"] == 2 * 64 // (8 * 2)  # each step takes 8 rows on each of 2 processes
