"""Training time per sample of generation methods on E2E, as ratios to full fine-tuning, in one run.

Each method trains a `Generator` on the same E2E (source, reference) batches with AdamW, in its own process (so
no method sees another's changes to the backbone); the first steps warm up, the rest are timed. Prefix-Tuning
reports full fine-tuning 1.5x slower than prefix-tuning per sample (the re-implementation: 1.8x).

    python bench/generation_speed.py --model smollm2-135m --data ../shared/data/e2e --batch-size 8 --steps 6
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import platform
import time
from datetime import date

import torch
from transformers import DataCollatorForSeq2Seq

from suffixtune import Generator, get_task, load_backbone
from suffixtune.methods import get_method
from suffixtune.tasks.generation import load_sources, tokenize_pairs

METHODS = ("full", "deep-prefix", "suffix", "prefix", "lora")


def time_method(method: str, options: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(options.threads)
    backbone, tokenizer = load_backbone(options.model)
    task = get_task("e2e")
    config_class = get_method(method).config_class
    config = config_class(prompt_length=options.prompt_length) if "prompt_length" in config_class.__dataclass_fields__ else None
    generator = Generator.build(backbone, tokenizer, task, method, config, max_target_length=options.max_target_length)
    pairs = tokenize_pairs(task, load_sources(task, "train", data_dir=options.data), tokenizer,
                           generator.classifier_config.max_length, options.max_target_length)
    pairs = pairs.shuffle(seed=0).select(range(options.batch_size * (options.warmup + options.steps)))
    collate = DataCollatorForSeq2Seq(tokenizer, padding=True)
    batches = [collate([pairs[i] for i in range(start, start + options.batch_size)])
               for start in range(0, len(pairs), options.batch_size)]
    trainable = [p for p in generator.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    generator.train()
    elapsed, tokens = 0.0, 0
    for step, batch in enumerate(batches):
        started = time.perf_counter()
        loss = generator(batch["input_ids"], batch["attention_mask"], batch["labels"]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if step >= options.warmup:
            elapsed += time.perf_counter() - started
            tokens += int(batch["attention_mask"].sum() + (batch["labels"] != -100).sum())
    samples = options.batch_size * options.steps
    return {"method": method, "samples_per_second": samples / elapsed, "seconds_per_sample": elapsed / samples,
            "tokens_per_second": tokens / elapsed, "trainable_parameters": sum(p.numel() for p in trainable),
            "text_pass": "frozen" if generator.runs_text_apart_when_training() else "full"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data", required=True, help="Directory with E2E's devset.csv.")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--prompt-length", type=int, default=10)
    parser.add_argument("--max-target-length", type=int, default=96)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    options = parser.parse_args()
    rows = []
    context = multiprocessing.get_context("spawn")
    for method in options.methods.split(","):
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
            rows.append(pool.submit(time_method, method, options).result())
    full = next((r for r in rows if r["method"] == "full"), None)
    print(f"{date.today()}, {platform.processor() or platform.machine()}, {options.threads} threads, batch {options.batch_size}, "
          f"{options.steps} timed steps after {options.warmup}, P = {options.prompt_length}")
    print("| method | samples/s | s per sample | tokens/s | trainable parameters | text pass | full fine-tuning's time per sample / this |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        ratio = f"{full['seconds_per_sample'] and full['seconds_per_sample'] / row['seconds_per_sample']:.2f}" if full else "–"
        print(f"| {row['method']} | {row['samples_per_second']:.2f} | {row['seconds_per_sample']:.3f} | {row['tokens_per_second']:.0f} "
              f"| {row['trainable_parameters']:,} | {row['text_pass']} | {ratio} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
