"""Remedies for suffix runs that fail to learn: each named setting x several seeds, judged by its worst seed.

Every cell is one `suffixtune train` run in its own process (as a user runs it), except `naive-loop`: the
simplest loop that works, written here apart from Trainer (random-vocabulary prompt, plain AdamW at a constant
3e-3, clipping at 1.0, random batches), the anchor a default must not lose to. Records go to --out as JSON lines;
a rerun skips the cells already there, so an interrupted sweep resumes.

    python bench/remedies.py --task sst2 --data ../shared/data/sst2 --rows 800 --batch-size 4 \
        --seeds 0,1,2,3,4 --settings defaults,naive-loop,standardize --out runs/remedies/sst2.jsonl
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = {  # explicit flags, so a record keeps its meaning when a default changes
    "defaults": "",
    "v1-defaults": "--standardize none --lr_scheduler_type linear --warmup_steps 0.06 --train_sampling_strategy group_by_length --prompt_init text",
    "constant-random": "--standardize none --lr_scheduler_type constant --warmup_steps 0 --train_sampling_strategy random",
    "standardize": "--standardize features",
    "standardize-constant-random": "--standardize features --lr_scheduler_type constant --warmup_steps 0 --train_sampling_strategy random",
    "standardize-init-random": "--standardize features --prompt_init random",
    "standardize-head-lr-1e-3": "--standardize features --head_learning_rate 1e-3",
    "standardize-lp-ft": "--standardize features --head_only_steps 0.2",
    "standardize-reparam": "--standardize features --reparam true",
    "lp-ft": "--standardize none --head_only_steps 0.2",
    "reparam": "--standardize none --reparam true",
}


def naive_loop(args: argparse.Namespace, seed: int) -> dict:
    """The anchor: a 20-line loop over suffixtune's Classifier, no Trainer, no schedule, no tricks."""
    import numpy as np
    import torch

    from suffixtune.backbone import load_backbone
    from suffixtune.classifier import Classifier
    from suffixtune.methods.soft_prompt import SoftPromptConfig
    from suffixtune.metrics import collapse_reason, compute_metrics, did_not_learn
    from suffixtune.tasks import get_task
    from suffixtune.tasks.data import load_split
    from suffixtune.training.run import subsample

    torch.manual_seed(seed)
    task = get_task(args.task)
    train = subsample(load_split(task, "train", data_dir=args.data), args.rows, args.subset_seed)
    validation = load_split(task, args.eval_split, data_dir=args.data)
    backbone, tokenizer = load_backbone(args.model)
    config = SoftPromptConfig(prompt_length=args.prompt_length, prompt_init="random")
    model = Classifier.build(backbone, tokenizer, task, "suffix", config, max_length=args.max_length)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=3e-3)
    texts = train.texts
    order = torch.randperm(len(texts)).tolist()
    started = time.perf_counter()
    model.train()
    for start in range(0, len(order), args.batch_size):
        rows = order[start : start + args.batch_size]
        batch = tokenizer([texts[i] for i in rows], truncation=True, max_length=args.max_length, padding=True, return_tensors="pt")
        loss = model(batch.input_ids, batch.attention_mask, torch.tensor([train.labels[i] for i in rows])).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
    train_runtime = time.perf_counter() - started
    predictions = model.predict_logits(validation.rows).argmax(-1).numpy()
    labels = np.asarray(validation.labels)
    failure = collapse_reason(predictions, labels, task.label_names)
    return {"status": "failed" if failure else "ok", "did_not_learn": did_not_learn(predictions, labels, task.label_names),
            "eval": compute_metrics(task.metrics, predictions, labels),
            "train_runtime_s": train_runtime, "train_log": []}


def run_cell(args: argparse.Namespace, setting: str, seed: int) -> dict:
    if setting == "naive-loop":
        command = [sys.executable, __file__, "--naive-loop-seed", str(seed), *sys.argv[1:]]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        return json.loads(output.strip().splitlines()[-1])
    from dataclasses import fields

    from suffixtune.methods import get_method

    takes_prompt = "prompt_length" in {f.name for f in fields(get_method(args.method).config_class)}
    with tempfile.TemporaryDirectory() as output:
        command = [
            str(Path(sys.executable).parent / "suffixtune"), "train", "--model", args.model, "--task", args.task, "--data", args.data,
            "--max_train_samples", str(args.rows), "--subset_seed", str(args.subset_seed),
            "--per_device_train_batch_size", str(args.batch_size), "--num_train_epochs", str(args.epochs),
            *(["--prompt_length", str(args.prompt_length)] if takes_prompt else []), "--method", args.method,
            "--max_length", str(args.max_length),
            "--seed", str(seed), "--output_dir", output, "--save_strategy", "no", "--load_best_model_at_end", "false",
            "--disable_tqdm", "true", *shlex.split(SETTINGS[setting]), *shlex.split(args.extra),
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        path = Path(output) / "metrics.json"
        if not path.is_file():
            raise RuntimeError(f"{setting} seed {seed} wrote no record:\n{done.stderr[-3000:]}")
        return json.loads(path.read_text())


def summary(records: list[dict], metric: str) -> str:
    lines = ["| setting | seeds | mean | std | worst | best | did not learn / failed |", "|---|---|---|---|---|---|---|"]
    settings = list(dict.fromkeys(r["setting"] for r in records))
    for setting in settings:
        rows = [r for r in records if r["setting"] == setting]
        values = [r["eval"][metric] for r in rows]
        bad = sum(1 for r in rows if r["status"] != "ok" or r.get("did_not_learn"))
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        lines.append(f"| {setting} | {len(values)} | {statistics.mean(values):.3f} | {std:.3f} | {min(values):.3f} | "
                     f"{max(values):.3f} | {bad} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--data", default="../shared/data/sst2")
    parser.add_argument("--eval-split", default="validation")
    parser.add_argument("--method", default="suffix")
    parser.add_argument("--rows", type=int, default=800)
    parser.add_argument("--subset-seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--prompt-length", type=int, default=10)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--settings", default="defaults,naive-loop")
    parser.add_argument("--extra", default="", help="Flags added to every suffixtune run.")
    parser.add_argument("--out", required=True, help="JSON lines, one per finished cell; cells already there are skipped.")
    parser.add_argument("--naive-loop-seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_loop_seed is not None:
        print(json.dumps(naive_loop(args, args.naive_loop_seed)))
        return

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    records = [json.loads(line) for line in out.read_text().splitlines()] if out.is_file() else []
    done = {(r["setting"], r["seed"]) for r in records}
    for setting in args.settings.split(","):
        for seed in map(int, args.seeds.split(",")):
            if (setting, seed) in done:
                continue
            record = run_cell(args, setting, seed)
            row = {"setting": setting, "seed": seed, "flags": SETTINGS.get(setting, "(naive loop)"), "status": record["status"],
                   "did_not_learn": record.get("did_not_learn"), "eval": record["eval"],
                   "train_runtime_s": record.get("train_runtime_s"),
                   "losses": [entry["loss"] for entry in record.get("train_log", [])]}
            records.append(row)
            with out.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(json.dumps({k: row[k] for k in ("setting", "seed", "status", "did_not_learn")} | {"eval": row["eval"]}), flush=True)
    from suffixtune.tasks import get_task

    metric = get_task(args.task).metrics[0]
    print(f"\n{args.model}, {args.task}, {args.rows} rows, batch {args.batch_size}, {args.epochs:g} epoch(s), P = {args.prompt_length}: {metric}")
    print(summary(records, metric))


if __name__ == "__main__":
    main()
