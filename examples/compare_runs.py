"""Print a Markdown table of run directories: method, head, trainable params, train rows, metrics, time.

A run directory's test_metrics.json (written by `suffixtune eval --split test`) adds its test metrics.
"""

import json
import sys
from pathlib import Path


def main(directories: list[str]) -> None:
    print("| run | method | head | trainable params | train rows | dev metrics | test metrics | status | train time |")
    print("|---|---|---|---|---|---|---|---|---|")
    for directory in map(Path, directories):
        record = json.loads((directory / "metrics.json").read_text())
        test_file = directory / "test_metrics.json"
        test = json.loads(test_file.read_text()) if test_file.is_file() else {}
        train_time = f"{record['train_runtime_s']:.0f} s" if record.get("train_runtime_s") else "-"
        print(
            f"| {directory.parent.name}/{directory.name} | {record['method']} | {record['head']} | "
            f"{record['trainable_parameters']:,} | {record['train_rows']} | {format_metrics(record['eval'])} | "
            f"{format_metrics({k: test[k] for k in record['eval'] if k in test})} | {record['status']} | {train_time} |"
        )


def format_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()) or "-"


if __name__ == "__main__":
    main(sys.argv[1:])
