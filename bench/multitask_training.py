"""Training samples/s for K label columns: one multi-task run (one text pass, K suffixes packed) vs K runs alone.

Both train K suffix prompts (P vectors each) and 2-class heads on the same SST-2 batches with AdamW and clipping,
on the frozen-text path; `separate` is what K `suffixtune train` runs cost (K text passes per batch), `together`
is `--label_column` given K times (`MultiTaskTrainingModel`). Samples/s counts each text once, with all K labels.

    python bench/multitask_training.py --model smollm2-135m --device cpu --batch-size 8 --steps 4
    python bench/multitask_training.py --model gpt2-large --random-init --tokenizer DIR --tasks 2 4
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time
from datetime import date

import torch
from train_throughput import TASK, batches, load_model

from suffixtune import Classifier
from suffixtune.methods.soft_prompt import SoftPromptConfig
from suffixtune.multitask.training import MultiTaskTrainingModel


def trainer_step(models, device: str, bf16: bool):
    params = [p for m in models for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16)

    def step(ids, mask, labels):
        for model in models:
            with autocast:
                loss = model(ids, mask, labels if isinstance(model, MultiTaskTrainingModel) else labels[:, 0]).loss
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def seconds_per_pass(step, data, device: str, repeats: int) -> float:
    def once():
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for batch in data:
            step(*batch)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    once()
    return statistics.median(once() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--random-init", action="store_true")
    parser.add_argument("--tokenizer", default="../shared/models/gpt2-tokenizer")
    parser.add_argument("--data", default="../shared/data/sst2/train.tsv")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--synthetic-length", type=int)
    parser.add_argument("--prompt-length", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bf16 = args.device.startswith("cuda")
    torch.manual_seed(0)
    backbone, tokenizer = load_model(args)
    data = [(ids, mask, labels[:, None].expand(-1, max(args.tasks))) for ids, mask, labels in batches(args, tokenizer)]
    machine = torch.cuda.get_device_name() if bf16 else f"{platform.processor() or 'cpu'}, {torch.get_num_threads()} threads"
    print(f"{args.model}{' (random init)' if args.random_init else ''} on {machine}, {date.today()}, batch {args.batch_size}, "
          f"P = {args.prompt_length}, {'bf16 autocast' if bf16 else 'fp32'}, {args.steps} steps, median of {args.repeats}")
    print("| K | together samples/s | K separate samples/s | together / separate |")
    print("|---|---|---|---|")
    for count in args.tasks:
        classifiers = {
            f"task{k}": Classifier.build(
                backbone, tokenizer, dataclasses.replace(TASK, name=f"task{k}"), "suffix",
                SoftPromptConfig(prompt_length=args.prompt_length),
            ).train()
            for k in range(count)
        }
        together = MultiTaskTrainingModel(classifiers).train()
        rows = [(ids, mask, labels[:, :count]) for ids, mask, labels in data]
        samples = len(rows) * args.batch_size
        one = samples / seconds_per_pass(trainer_step([together], args.device, bf16), rows, args.device, args.repeats)
        apart = samples / seconds_per_pass(trainer_step(list(classifiers.values()), args.device, bf16), rows, args.device, args.repeats)
        print(f"| {count} | {one:.1f} | {apart:.1f} | {one / apart:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
