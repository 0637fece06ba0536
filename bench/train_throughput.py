"""Training samples/s, peak memory and trainable parameters of every method on one model and data slice, in one run.

suffixtune's methods run through `Classifier` (the training forward pass). The anchors are PEFT as users run it,
on `AutoModelForSequenceClassification` over the same frozen weights: prompt tuning for `suffix`/`prefix`,
prefix tuning for `deep-prefix`, LoRA for `lora`. `per-row-suffix` is the original prototype's per-row loop.
Every method trains a 2-class head on the same batches with AdamW and clipping at 1.0. Each method runs in its own
process, so its peak memory (CUDA max allocated, or process RSS on CPU) is its own and no method sees another's
changes to the backbone.

    python bench/train_throughput.py --model smollm2-135m --device cpu --batch-size 8 --steps 4       # CPU
    python bench/train_throughput.py --model gpt2-large --random-init --tokenizer DIR ...             # GPU
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import csv
import json
import multiprocessing
import platform
import resource
import statistics
import time
from datetime import date

import torch
from peft import LoraConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model
from transformers import AutoModelForSequenceClassification, GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

from suffixtune import Classifier, Task, load_backbone
from suffixtune.backbone import prepare_backbone
from suffixtune.methods import get_method
from suffixtune.methods.base import BackboneInputs
from suffixtune.methods.lora import default_targets
from suffixtune.methods.soft_prompt import SoftPrompt

GPT2_SIZES = {  # n_embd, n_layer, n_head of the released checkpoints
    "gpt2": (768, 12, 12),
    "gpt2-medium": (1024, 24, 16),
    "gpt2-large": (1280, 36, 20),
    "gpt2-xl": (1600, 48, 25),
}
TASK = Task(name="bench", text_columns=("sentence",), label_names=("negative", "positive"), prompt_text=" Sentiment:")
ANCHORS = {"suffix": "peft-prompt-tuning", "prefix": "peft-prompt-tuning", "per-row-suffix": "peft-prompt-tuning",
           "deep-prefix": "peft-prefix-tuning", "lora": "peft-lora"}
ALL_METHODS = ("suffix,prefix,peft-prompt-tuning,per-row-suffix,deep-prefix,peft-prefix-tuning,lora,peft-lora,"
               "last-blocks,head,full")


class PerRowSuffix(SoftPrompt):
    """The original prototype's way: copy text and prompt into place one row at a time in Python."""

    name = "per-row-suffix"
    before_text = False

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> BackboneInputs:
        rows, pools = [], []
        prompt = self.prompt.to(inputs_embeds.dtype)
        for embeds, mask in zip(inputs_embeds, attention_mask, strict=True):
            length = int(mask.sum())
            rows.append(torch.cat([embeds[:length], prompt, embeds[length:]]))
            pools.append(length + len(prompt) - 1)
        positions = torch.arange(rows[0].shape[0], device=inputs_embeds.device).expand(len(rows), -1)
        return BackboneInputs(torch.stack(rows), positions, torch.tensor(pools, device=inputs_embeds.device))


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
    config = get_method("suffix" if method == "per-row-suffix" else method).config_class()
    if hasattr(config, "prompt_length"):
        config.prompt_length = args.prompt_length
    classifier = Classifier.build(backbone, tokenizer, TASK, "suffix" if method == "per-row-suffix" else method, config)
    if method == "per-row-suffix":
        classifier.method = PerRowSuffix(config, backbone).to(args.device)
    return classifier, lambda ids, mask, labels: classifier(ids, mask, labels).loss


def peft_anchor(backbone, tokenizer, method: str, args):
    config = copy.deepcopy(backbone.config)
    config.num_labels = 2
    with torch.device("meta"):  # no second copy of the weights: ours are put in below
        model = AutoModelForSequenceClassification.from_config(config)
    setattr(model, model.base_model_prefix, backbone.base_model)  # same frozen weights as ours
    model.score = torch.nn.Linear(config.hidden_size, 2, bias=False, device=args.device)
    model.config.pad_token_id = tokenizer.pad_token_id
    if method == "peft-prompt-tuning":
        peft_config = PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=args.prompt_length)
    elif method == "peft-prefix-tuning":
        peft_config = PrefixTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=args.prompt_length)
    else:
        ours_default = get_method("lora").config_class()
        peft_config = LoraConfig(
            task_type="SEQ_CLS", r=ours_default.lora_r, lora_alpha=ours_default.lora_alpha,
            lora_dropout=ours_default.lora_dropout, target_modules=default_targets(backbone),
            fan_in_fan_out=backbone.config.model_type == "gpt2",
        )
    model = get_peft_model(model, peft_config).to(args.device)
    return model, lambda ids, mask, labels: model(input_ids=ids, attention_mask=mask, labels=labels).loss


def measure(method: str, args) -> list[dict]:
    """Build `method` on a fresh backbone in this process and time `args.repeats` passes after an untimed one."""
    torch.manual_seed(0)
    backbone, tokenizer = load_model(args)
    model, loss_of = (peft_anchor if method.startswith("peft-") else ours)(backbone, tokenizer, method, args)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5 if method in ("full", "last-blocks") else 1e-3)
    model.train()
    autocast = torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.bf16)
    cuda = args.device.startswith("cuda")
    data = list(batches(args, tokenizer))

    def step(ids, mask, labels):
        with autocast:
            loss = loss_of(ids, mask, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    for batch in data:  # untimed pass: every batch shape is seen once and the optimizer state exists
        step(*batch)
    results = []
    for _ in range(args.repeats):
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        for batch in data:
            loss = step(*batch)
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
        results.append({"samples_per_s": len(data) * args.batch_size / elapsed, "final_loss": loss.item()})
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    trainable = sum(p.numel() for p in params)
    return [dict(r, method=method, trainable_parameters=trainable, peak_memory_gb=peak / 2**30) for r in results]


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
    parser.add_argument("--methods", default=ALL_METHODS, help=f"Comma-separated; default all: {ALL_METHODS}")
    parser.add_argument("--repeats", type=int, default=3, help="Timed passes per method; the median is reported.")
    parser.add_argument("--json", help="Also write the rows here.")
    args = parser.parse_args()
    args.bf16 = args.device.startswith("cuda")
    methods = args.methods.split(",")
    spawn = multiprocessing.get_context("spawn")
    rows = []
    for method in methods:
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
            runs = pool.submit(measure, method, args).result()
        speeds = sorted(r["samples_per_s"] for r in runs)
        rows.append(dict(runs[0], samples_per_s=statistics.median(speeds), spread=(speeds[0], speeds[-1])))
    speed = {r["method"]: r["samples_per_s"] for r in rows}
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"\n{args.model}{' (random init)' if args.random_init else ''} on {device}, {date.today()}, batch {args.batch_size}, "
          f"text <= {args.max_tokens} tokens, P = {args.prompt_length}, {'bf16 autocast' if args.bf16 else 'fp32'}, "
          f"median of {args.repeats} timed passes of {args.steps} steps after an untimed one, one process per method")
    memory = "peak GPU memory (GB)" if args.device.startswith("cuda") else "peak process RSS (GB)"
    print(f"| method | samples/s (min-max) | vs PEFT anchor | {memory} | trainable params |")
    print("|---|---|---|---|---|")
    for r in rows:
        anchor = ANCHORS.get(r["method"])
        ratio = f"{r['samples_per_s'] / speed[anchor]:.2f}x {anchor}" if anchor in speed else "-"
        spread = f"{r['spread'][0]:.1f}-{r['spread'][1]:.1f}"
        print(f"| {r['method']} | {r['samples_per_s']:.1f} ({spread}) | {ratio} | {r['peak_memory_gb']:.2f} | {r['trainable_parameters']:,} |")
    if "full" in speed and "deep-prefix" in speed:
        print(f"\nfull fine-tuning takes {speed['deep-prefix'] / speed['full']:.2f}x as long per sample as deep-prefix "
              "(Prefix-Tuning reports about 1.5x)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "device": device, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
