"""Training samples/s of soft-prompt implementations on one model, one data slice and one batch size, in one run.

Compares suffixtune's `suffix` and `prefix` with PEFT prompt tuning (the anchor) and a per-row loop like the
original prototype's. Every method trains the same prompt length and a 2-class head on the same batches.

    python bench/train_throughput.py --model smollm2-135m --batch-size 8 --steps 5          # CPU
    python bench/train_throughput.py --model gpt2-large --random-init --tokenizer DIR ...    # GPU
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import platform
import statistics
import time
from datetime import date

import torch
from peft import PromptTuningConfig, get_peft_model
from transformers import AutoModelForSequenceClassification, GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

from suffixtune import Classifier, Task, load_backbone
from suffixtune.backbone import prepare_backbone
from suffixtune.methods.base import BackboneInputs
from suffixtune.methods.soft_prompt import SoftPrompt, SoftPromptConfig

GPT2_SIZES = {  # n_embd, n_layer, n_head of the released checkpoints
    "gpt2": (768, 12, 12),
    "gpt2-medium": (1024, 24, 16),
    "gpt2-large": (1280, 36, 20),
    "gpt2-xl": (1600, 48, 25),
}
TASK = Task(name="bench", text_columns=("sentence",), label_names=("negative", "positive"), prompt_text=" Sentiment:")


class PerRowSuffix(SoftPrompt):
    """The original prototype's way: copy text and prompt into place one row at a time in Python."""

    name = "per-row-suffix"
    before_text = False

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> BackboneInputs:
        rows, masks, pools = [], [], []
        prompt = self.prompt.to(inputs_embeds.dtype)
        for embeds, mask in zip(inputs_embeds, attention_mask, strict=True):
            length = int(mask.sum())
            rows.append(torch.cat([embeds[:length], prompt, embeds[length:]]))
            masks.append(torch.cat([mask[:length], mask.new_ones(len(prompt)), mask[length:]]))
            pools.append(length + len(prompt) - 1)
        mask = torch.stack(masks)
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        return BackboneInputs(torch.stack(rows), positions, torch.tensor(pools, device=mask.device), mask)


def load_model(args):
    if args.random_init:
        hidden, layers, heads = GPT2_SIZES[args.model]
        tokenizer = GPT2TokenizerFast.from_pretrained(args.tokenizer)
        backbone = GPT2LMHeadModel(GPT2Config(n_embd=hidden, n_layer=layers, n_head=heads, vocab_size=len(tokenizer)))
        backbone.name_or_path = f"random-init {args.model}"
        prepare_backbone(backbone, tokenizer)
    else:
        backbone, tokenizer = load_backbone(args.model)
    return backbone.to(args.device), tokenizer


def batches(args, tokenizer):
    with open(args.data, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    needed = args.steps * args.batch_size
    texts = [row["sentence"] for row in rows[:needed]]
    labels = [int(row["label"]) for row in rows[:needed]]
    tokenizer.padding_side = "right"
    for start in range(0, needed, args.batch_size):
        batch = tokenizer(texts[start : start + args.batch_size], padding=True, truncation=True, max_length=args.max_tokens, return_tensors="pt")
        yield batch.input_ids.to(args.device), batch.attention_mask.to(args.device), torch.tensor(labels[start : start + args.batch_size], device=args.device)


def ours(backbone, tokenizer, method: str, args):
    config = SoftPromptConfig(prompt_length=args.prompt_length)
    if method == "per-row-suffix":
        classifier = Classifier.build(backbone, tokenizer, TASK, "suffix", config)
        classifier.method = PerRowSuffix(config, backbone).to(args.device)
    else:
        classifier = Classifier.build(backbone, tokenizer, TASK, method, config)
    return classifier, lambda ids, mask, labels: classifier(ids, mask, labels).loss


def peft_prompt_tuning(backbone, tokenizer, args):
    config = copy.deepcopy(backbone.config)
    config.num_labels = 2
    model = AutoModelForSequenceClassification.from_config(config)
    setattr(model, model.base_model_prefix, backbone.base_model)  # same frozen weights as the others
    model.config.pad_token_id = tokenizer.pad_token_id
    model = get_peft_model(model, PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=args.prompt_length)).to(args.device)
    return model, lambda ids, mask, labels: model(input_ids=ids, attention_mask=mask, labels=labels).loss


def measure(name: str, model, loss_of, args, tokenizer) -> dict:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    model.train()
    autocast = torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.bf16)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    data = list(batches(args, tokenizer))

    def step(ids, mask, labels):
        with autocast:
            loss = loss_of(ids, mask, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    for batch in data:  # untimed pass: every batch shape is seen once, whichever method runs first
        step(*batch)
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for batch in data:
        loss = step(*batch)
    samples = len(data) * args.batch_size
    tokens = sum(int(mask.sum()) for _, mask, _ in data) + samples * args.prompt_length
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    return {
        "method": name, "samples_per_s": samples / elapsed, "tokens_per_s": tokens / elapsed,
        "trainable_parameters": sum(p.numel() for p in params),
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else None, "final_loss": loss.item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--random-init", action="store_true", help="Random weights from the GPT-2 size's config.")
    parser.add_argument("--tokenizer", default="../shared/models/gpt2-tokenizer")
    parser.add_argument("--data", default="../shared/data/sst2/train.tsv")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--prompt-length", type=int, default=20)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--methods", default="suffix,prefix,peft-prompt-tuning,per-row-suffix")
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs per method, in rotating order; the median is reported.")
    parser.add_argument("--json", help="Also write the rows here.")
    args = parser.parse_args()
    args.bf16 = args.device.startswith("cuda")
    torch.manual_seed(0)
    backbone, tokenizer = load_model(args)
    methods = args.methods.split(",")
    built = {m: peft_prompt_tuning(backbone, tokenizer, args) if m == "peft-prompt-tuning" else ours(backbone, tokenizer, m, args) for m in methods}
    runs = {m: [] for m in methods}
    for repeat in range(args.repeats):  # rotate the order so no method always runs first
        for method in methods[repeat % len(methods):] + methods[: repeat % len(methods)]:
            runs[method].append(measure(method, *built[method], args, tokenizer))
    rows = []
    for method in methods:
        speeds = sorted(r["samples_per_s"] for r in runs[method])
        row = dict(runs[method][0], samples_per_s=statistics.median(speeds), spread=(speeds[0], speeds[-1]))
        row["tokens_per_s"] = statistics.median(r["tokens_per_s"] for r in runs[method])
        row["peak_memory_gb"] = max((r["peak_memory_gb"] or 0) for r in runs[method]) or None
        rows.append(row)
    anchor = next((r["samples_per_s"] for r in rows if r["method"] == "peft-prompt-tuning"), None)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"\n{args.model}{' (random init)' if args.random_init else ''} on {device}, {date.today()}, batch {args.batch_size}, "
          f"text <= {args.max_tokens} tokens, P = {args.prompt_length}, {'bf16 autocast' if args.bf16 else 'fp32'}, median of {args.repeats} runs of {args.steps} steps, each after an untimed pass over the same batches")
    print("| method | samples/s (min-max) | tokens/s | vs PEFT prompt tuning | peak GPU memory (GB) | trainable params |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['samples_per_s'] / anchor:.2f}x" if anchor else "-"
        memory = f"{r['peak_memory_gb']:.2f}" if r["peak_memory_gb"] is not None else "-"
        spread = f"{r['spread'][0]:.1f}-{r['spread'][1]:.1f}"
        print(f"| {r['method']} | {r['samples_per_s']:.1f} ({spread}) | {r['tokens_per_s']:.0f} | {ratio} | {memory} | {r['trainable_parameters']:,} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "device": device, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
