"""Texts/s classifying every text for K tasks: shared cache vs K separate suffix passes vs PEFT mixed-batch LoRA.

(a) `shared`: `MultiTaskClassifier.forward`, one packed pass over [text | suffix 1 | ... | suffix K] per text;
    `shared-cached` the same tasks with `text_pass="cached"`: the text pass keeps its keys and values, then one
    call runs all K suffixes against them (the path training takes).
(b) `separate`: each task's `Classifier` alone, K full passes over text + suffix (what any prompt method costs).
(c) `peft-lora`: PEFT LoRA with K adapters in one mixed batch (`adapter_names`), B*K rows of the text, on the
    transformer without its LM head (what PEFT offers for many tasks on one base model).
Texts are random token ids of exactly L tokens; every task has a P-vector suffix and a 2-class linear head.
The ideal speedup of (a) over (b) is the token ratio K(L+P)/(L+KP).

    python bench/multitask.py --model smollm2-135m --device cpu --batch-size 4
    python bench/multitask.py --model gpt2-large --random-init --tokenizer DIR --device cuda --dtype bfloat16 --batch-size 32
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from datetime import date

import torch
from peft import LoraConfig, get_peft_model
from train_throughput import GPT2_SIZES, load_model

from suffixtune import Classifier, Task
from suffixtune.methods.lora import default_targets
from suffixtune.methods.soft_prompt import SoftPromptConfig
from suffixtune.multitask import MultiTaskClassifier


def timed(run, device: str, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up."""
    def once():
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    once()
    return statistics.median(once() for _ in range(repeats))


def build_tasks(backbone, tokenizer, count: int, prompt_length: int) -> dict[str, Classifier]:
    classifiers = {}
    for k in range(count):
        task = Task(name=f"task{k}", text_columns=("text",), label_names=("no", "yes"))
        config = SoftPromptConfig(prompt_length=prompt_length, prompt_init="random")
        classifiers[task.name] = Classifier.build(backbone, tokenizer, task, "suffix", config).eval()
    return classifiers


def peft_lora(backbone, count: int):
    transformer = copy.deepcopy(backbone.base_model)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=default_targets(backbone), fan_in_fan_out=backbone.config.model_type == "gpt2")
    model = get_peft_model(transformer, config, adapter_name="task0")
    for k in range(1, count):
        model.add_adapter(f"task{k}", config)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)  # trained adapters are not zero, so nothing is skipped
    return model.eval()


def approaches_for(multitask: MultiTaskClassifier, lora, ids: torch.Tensor, mask: torch.Tensor, names: list[str]):
    """One call of each approach: every text classified for every task in `names`."""
    classifiers = multitask.classifiers
    cached = MultiTaskClassifier(multitask.backbone, multitask.tokenizer, classifiers, text_pass="cached")
    return {
        "shared": lambda: multitask.forward(ids, mask, names),
        "shared-cached": lambda: cached.forward(ids, mask, names),
        "separate": lambda: {n: classifiers[n](ids, mask).logits for n in names},
        "peft-lora": lambda: lora(
            input_ids=ids.repeat_interleave(len(names), 0), adapter_names=names * len(ids)
        ).last_hidden_state[:, -1],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--random-init", action="store_true", help=f"random weights of a GPT-2 size: {list(GPT2_SIZES)}")
    parser.add_argument("--tokenizer", help="tokenizer directory for --random-init")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch-size", type=int, default=4, help="texts per forward")
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--prompt-length", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--approaches", default="shared,shared-cached,separate,peft-lora")
    parser.add_argument("--output", help="write the rows as JSON here too")
    args = parser.parse_args()
    approaches = args.approaches.split(",")
    torch.manual_seed(0)
    backbone, tokenizer = load_model(args)
    backbone.to(dtype=getattr(torch, args.dtype))
    classifiers = build_tasks(backbone, tokenizer, max(args.tasks), args.prompt_length)
    multitask = MultiTaskClassifier(backbone, tokenizer, classifiers)
    lora = peft_lora(backbone, max(args.tasks)) if "peft-lora" in approaches else None
    machine = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{platform.processor() or 'cpu'}, {torch.get_num_threads()} threads"
    print(f"{args.model}{' (random init)' if args.random_init else ''}, {args.dtype}, {machine}, batch {args.batch_size} texts, "
          f"P={args.prompt_length}, torch {torch.__version__}, {date.today()}")
    print("| L | K | shared texts/s | shared-cached texts/s | separate texts/s | PEFT LoRA texts/s | shared/separate | ideal | "
          "% of ideal | packed/cached | shared/PEFT LoRA | max |Δlogit| | argmax agree |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for length in args.lengths:
        ids = torch.randint(0, len(tokenizer), (args.batch_size, length), device=args.device)
        mask = torch.ones_like(ids)
        for count in args.tasks:
            names = list(classifiers)[:count]
            runs = approaches_for(multitask, lora, ids, mask, names)
            with torch.inference_mode():
                seconds = {a: timed(runs[a], args.device, args.repeats) for a in approaches}
                shared, separate = runs["shared"](), runs["separate"]()
            difference = max((shared[n] - separate[n]).abs().max().item() for n in names)
            agree = sum(int((shared[n].argmax(-1) == separate[n].argmax(-1)).sum()) for n in names) / (count * len(ids))
            speed = {a: args.batch_size / s for a, s in seconds.items()}
            ideal = count * (length + args.prompt_length) / (length + count * args.prompt_length)
            ratio = speed["shared"] / speed["separate"] if {"shared", "separate"} <= speed.keys() else float("nan")
            versus_lora = speed["shared"] / speed["peft-lora"] if {"shared", "peft-lora"} <= speed.keys() else float("nan")
            versus_cached = speed["shared"] / speed["shared-cached"] if {"shared", "shared-cached"} <= speed.keys() else float("nan")
            row = {"length": length, "tasks": count, **{f"{a}_texts_per_s": v for a, v in speed.items()},
                   "speedup": ratio, "ideal": ideal, "of_ideal": ratio / ideal, "versus_peft_lora": versus_lora, "packed_over_cached": versus_cached,
                   "max_abs_logit_difference": difference, "argmax_agreement": agree}
            rows.append(row)
            print(f"| {length} | {count} | {speed.get('shared', float('nan')):.4g} | {speed.get('shared-cached', float('nan')):.4g} | "
                  f"{speed.get('separate', float('nan')):.4g} | {speed.get('peft-lora', float('nan')):.4g} | {ratio:.2f}× | "
                  f"{ideal:.2f}× | {ratio / ideal:.0%} | {versus_cached:.2f}× | {versus_lora:.2f}× | {difference:.1e} | {agree:.1%} |", flush=True)
    if args.output:
        with open(args.output, "w") as handle:
            json.dump({"args": vars(args), "machine": machine, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
