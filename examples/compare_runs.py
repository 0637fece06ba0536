"""Print a Markdown table of run directories' metrics.json: method, head, trainable params, train rows, metric, time."""

import json
import sys
from pathlib import Path


def main(directories: list[str]) -> None:
    print("| run | method | head | trainable params | train rows | dev metrics | status | wall time |")
    print("|---|---|---|---|---|---|---|---|")
    for directory in directories:
        record = json.loads((Path(directory) / "metrics.json").read_text())
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in record["eval"].items())
        print(
            f"| {Path(directory).name} | {record['method']} | {record['head']} | {record['trainable_parameters']:,} | "
            f"{record['train_rows']} | {metrics} | {record['status']} | {record['wall_time_s']:.0f} s |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
