"""Check on real data that the shared pass answers like each artifact alone, and time both.

Loads the artifacts onto one backbone (`MultiTaskClassifier`) and classifies the file's texts for every task
in shared passes; then runs each artifact alone (`Classifier.predict`) on the same backbone. Prints, per task,
how many labels agree, the largest probability difference, and accuracy where the file has the task's labels.

    python examples/multitask_check.py runs/sms-suffix runs/sst2-suffix probe=runs/sms-head \
        --data ../shared/data/sms_spam/test.csv --text-column Text --label-column Label --labels-for sms_spam probe
"""

from __future__ import annotations

import argparse
import json
import time

from suffixtune.cli import named_artifacts
from suffixtune.multitask import MultiTaskClassifier
from suffixtune.tasks.data import read_table


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifacts", nargs="+", metavar="[NAME=]DIR")
    parser.add_argument("--data", required=True)
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", help="gold labels: label names, or integer indices into the task's label names")
    parser.add_argument("--labels-for", nargs="*", default=[], metavar="TASK", help="tasks the label column scores")
    parser.add_argument("--max-rows", type=int)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    frame = read_table(args.data)[: args.max_rows]
    texts = frame[args.text_column].astype(str).tolist()

    multitask = MultiTaskClassifier.from_pretrained(named_artifacts(args.artifacts), device="cpu")
    start = time.perf_counter()
    shared = multitask.classify(texts, batch_size=args.batch_size)
    shared_seconds = time.perf_counter() - start
    report = {"rows": len(texts), "shared_seconds": round(shared_seconds, 1), "tasks": {}}
    alone_seconds = 0.0
    for name, classifier in multitask.classifiers.items():
        start = time.perf_counter()
        alone = classifier.predict([classifier.classifier_config.as_task().format(as_row(t, classifier)) for t in texts], args.batch_size)
        alone_seconds += time.perf_counter() - start
        together = [row[name] for row in shared]
        entry = {
            "shared_cache": multitask.tasks[name].shared_cache,
            "labels_agree": sum(a["label"] == b["label"] for a, b in zip(alone, together, strict=True)) / len(texts),
            "max_probability_difference": max(
                abs(a["probabilities"][k] - b["probabilities"][k]) for a, b in zip(alone, together, strict=True) for k in a["probabilities"]
            ),
        }
        if name in args.labels_for:
            names = classifier.classifier_config.label_names
            gold = [names[int(v)] if str(v).isdigit() else str(v) for v in frame[args.label_column]]
            entry["accuracy_shared"] = sum(g == b["label"] for g, b in zip(gold, together, strict=True)) / len(gold)
            entry["accuracy_alone"] = sum(g == a["label"] for g, a in zip(gold, alone, strict=True)) / len(gold)
        report["tasks"][name] = entry
    report["alone_seconds"] = round(alone_seconds, 1)
    print(json.dumps(report, indent=2))


def as_row(text: str, classifier) -> dict[str, str]:
    return {classifier.classifier_config.text_columns[0]: text}


if __name__ == "__main__":
    main()
