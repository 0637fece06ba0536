"""Training samples/s, peak memory and trainable parameters of every method on one model and data slice, in one run.

suffixtune's methods run through `Classifier` (the training forward pass). The anchors are PEFT as users run it,
on `AutoModelForSequenceClassification` over the same frozen weights: prompt tuning for `suffix`/`prefix`,
prefix tuning for `deep-prefix`, LoRA for `lora`. `per-row-suffix` is the original prototype's per-row loop.
`suffix` and `head` train on the frozen-text path (the text without gradient, then only the suffix);
`suffix-full-pass` is `--frozen_text false` (autograd through every position, as before); `suffix-cached` and
`head-cached` read the text cache, as every epoch after the first does (the untimed pass fills it).
MFU (GPU) counts the FLOPs each method must do: 2N per position forward, 2N more backward through the frozen
weights where gradients flow (N = the transformer blocks' weights), against the GPU's dense bf16 peak.
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
from suffixtune.text_cache import MemoryStore, TextCache

GPT2_SIZES = {  # n_embd, n_layer, n_head of the released checkpoints
    "gpt2": (768, 12, 12),
    "gpt2-medium": (1024, 24, 16),
    "gpt2-large": (1280, 36, 20),
    "gpt2-xl": (1600, 48, 25),
}
TASK = Task(name="bench", text_columns=("sentence",), label_names=("negative", "positive"), prompt_text=" Sentiment:")
ANCHORS = {"suffix": "peft-prompt-tuning", "prefix": "peft-prompt-tuning", "per-row-suffix": "peft-prompt-tuning",
           "deep-prefix": "peft-prefix-tuning", "lora": "peft-lora"}
ANCHORS.update({"suffix-full-pass": "peft-prompt-tuning", "suffix-cached": "peft-prompt-tuning"})
ALL_METHODS = ("peft-prompt-tuning,suffix-full-pass,suffix,suffix-cached,prefix,per-row-suffix,peft-prefix-tuning,"
               "deep-prefix,peft-lora,lora,last-blocks,head,head-cached,full")
VARIANTS = {  # bench name: (registered method, frozen_text, text cache)
    "per-row-suffix": ("suffix", False, False),
    "suffix-full-pass": ("suffix", False, False),
    "suffix-cached": ("suffix", True, True),
    "head-cached": ("head", True, True),
}
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 datasheet peaks


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
        with torch.device(args.device):  # initialised where it runs: gpt2-xl takes a minute to initialise on a CPU
            backbone = GPT2LMHeadModel(GPT2Config(n_embd=hidden, n_layer=layers, n_head=heads, vocab_size=len(tokenizer)))
        backbone.name_or_path = f"random-init {args.model}"
        prepare_backbone(backbone, tokenizer)
    else:
        backbone, tokenizer = load_backbone(args.model)
    return backbone.to(args.device), tokenizer


def batches(args, tokenizer, batch_size: int | None = None):
    """`args.steps` batches of SST-2 train rows cut to --max-tokens, or with --synthetic-length N of random token
    ids of N/2..N tokens (for long texts, which SST-2 lacks); right-padded."""
    batch_size = batch_size or args.batch_size
    needed = args.steps * batch_size
    if args.synthetic_length:
        generator = torch.Generator().manual_seed(0)
        lengths = torch.randint(args.synthetic_length // 2, args.synthetic_length + 1, (needed,), generator=generator)
        ids = [torch.randint(1000, len(tokenizer) - 1000, (int(n),), generator=generator).tolist() for n in lengths]
        labels = torch.randint(0, 2, (needed,), generator=generator).tolist()
    else:
        with open(args.data, encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
        rows = (rows * (needed // len(rows) + 1))[:needed]
        ids = tokenizer([row["sentence"] for row in rows], truncation=True, max_length=args.max_tokens).input_ids
        labels = [int(row["label"]) for row in rows]
    tokenizer.padding_side = "right"
    for start in range(0, needed, batch_size):
        batch = tokenizer.pad({"input_ids": ids[start : start + batch_size]}, return_tensors="pt")
        yield batch.input_ids.to(args.device), batch.attention_mask.to(args.device), torch.tensor(labels[start : start + batch_size], device=args.device)


def ours(backbone, tokenizer, method: str, args):
    registered, frozen_text, cached = VARIANTS.get(method, (method, True, False))
    config = get_method(registered).config_class()
    if hasattr(config, "prompt_length"):
        config.prompt_length = args.prompt_length
    classifier = Classifier.build(backbone, tokenizer, TASK, registered, config)
    classifier.frozen_text = frozen_text
    if cached:
        classifier.text_cache = TextCache(MemoryStore(budget=2**62))
    if method == "per-row-suffix":
        classifier.method = PerRowSuffix(config, backbone).to(args.device)
    return classifier, lambda ids, mask, labels: classifier(ids, mask, labels).loss


def step_flops(method: str, backbone, text_tokens: int, rows: int, prompt_length: int) -> float | None:
    """FLOPs one training step must do (see the module's docstring), or None where it is not counted."""
    embeddings = ("wte", "wpe", "embed_tokens")
    blocks = sum(p.numel() for name, p in backbone.base_model.named_parameters() if not name.startswith(embeddings))
    suffix, all_positions = rows * prompt_length, text_tokens + rows * prompt_length
    flops = {
        "suffix": 2 * text_tokens + 4 * suffix, "suffix-cached": 4 * suffix, "suffix-full-pass": 4 * all_positions,
        "prefix": 4 * all_positions, "peft-prompt-tuning": 4 * all_positions, "per-row-suffix": 4 * all_positions,
        "head": 2 * text_tokens, "full": 6 * text_tokens,
    }.get(method)
    return None if flops is None else flops * blocks


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


def prepare(method: str, args):
    """A fresh backbone in this process with `method` on it; (model, loss function, trainable params, step)."""
    torch.manual_seed(0)
    backbone, tokenizer = load_model(args)
    model, loss_of = (peft_anchor if method.startswith("peft-") else ours)(backbone, tokenizer, method, args)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5 if method in ("full", "last-blocks") else 1e-3)
    model.train()
    autocast = torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.bf16)

    def step(ids, mask, labels):
        with autocast:
            loss = loss_of(ids, mask, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return backbone, tokenizer, params, step


def measure(method: str, args) -> list[dict]:
    """Build `method` on a fresh backbone in this process and time `args.repeats` passes after an untimed one."""
    backbone, tokenizer, params, step = prepare(method, args)
    cuda = args.device.startswith("cuda")
    data = list(batches(args, tokenizer))
    for batch in data:  # untimed pass: every batch shape is seen once, the optimizer state (and any text cache) exists
        step(*batch)
    text_tokens = sum(int(mask.sum()) for _, mask, _ in data)
    flops = step_flops(method, backbone, text_tokens, len(data) * args.batch_size, args.prompt_length)
    peak_flops = next((v for k, v in PEAK_BF16_FLOPS.items() if cuda and k in torch.cuda.get_device_name()), None)
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
        mfu = flops / elapsed / peak_flops if flops and peak_flops and args.bf16 else None
        results.append({"samples_per_s": len(data) * args.batch_size / elapsed, "final_loss": loss.item(), "mfu": mfu})
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    trainable = sum(p.numel() for p in params)
    return [dict(r, method=method, trainable_parameters=trainable, peak_memory_gb=peak / 2**30) for r in results]


def largest_batch(method: str, args, limit: int = 16384) -> int:
    """The largest power-of-two multiple of --batch-size whose training steps fit in GPU memory (up to `limit`)."""
    backbone, tokenizer, _, step = prepare(method, args)
    fits, size, two_steps = 0, args.batch_size, argparse.Namespace(**{**vars(args), "steps": 2})
    while size <= limit:
        try:
            for batch in batches(two_steps, tokenizer, size):
                step(*batch)
            torch.cuda.synchronize()
        except torch.OutOfMemoryError:
            break
        fits, size = size, size * 2
    return fits


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
    parser.add_argument("--synthetic-length", type=int, help="Random token ids of N/2..N tokens instead of SST-2 rows.")
    parser.add_argument("--max-batch", action="store_true", help="Also find each method's largest batch that fits (GPU).")
    parser.add_argument("--json", help="Also write the rows here.")
    args = parser.parse_args()
    args.bf16 = args.device.startswith("cuda")
    methods = args.methods.split(",")
    spawn = multiprocessing.get_context("spawn")
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    texts = f"random texts of {args.synthetic_length // 2}-{args.synthetic_length} tokens" if args.synthetic_length else f"SST-2 text <= {args.max_tokens} tokens"
    print(f"\n{args.model}{' (random init)' if args.random_init else ''} on {device}, {date.today()}, batch {args.batch_size}, "
          f"{texts}, P = {args.prompt_length}, {'bf16 autocast' if args.bf16 else 'fp32'}, "
          f"median of {args.repeats} timed passes of {args.steps} steps after an untimed one, one process per method")
    memory = "peak GPU memory (GB)" if args.device.startswith("cuda") else "peak process RSS (GB)"
    extra = " largest batch |" if args.max_batch else ""
    print(f"| method | samples/s (min-max) | vs PEFT anchor | vs suffix-full-pass | MFU | {memory} |{extra} trainable params |")
    print("|---|---|---|---|---|---|" + ("---|" if args.max_batch else "") + "---|", flush=True)
    rows, speed = [], {}
    for method in methods:  # each row prints as soon as it is measured; list anchors first for their ratios
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
            runs = pool.submit(measure, method, args).result()
        speeds = sorted(r["samples_per_s"] for r in runs)
        r = dict(runs[0], samples_per_s=statistics.median(speeds), spread=(speeds[0], speeds[-1]))
        r["mfu"] = statistics.median(x["mfu"] for x in runs) if runs[0]["mfu"] is not None else None
        if args.max_batch:
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
                r["max_batch"] = pool.submit(largest_batch, method, args).result()
        rows.append(r)
        speed[method] = r["samples_per_s"]
        anchor = ANCHORS.get(method)
        ratio = f"{r['samples_per_s'] / speed[anchor]:.2f}x {anchor}" if anchor in speed else "-"
        own = f"{r['samples_per_s'] / speed['suffix-full-pass']:.2f}x" if method in ("suffix", "suffix-cached") and "suffix-full-pass" in speed else "-"
        mfu = "-" if r["mfu"] is None else f"{r['mfu']:.1%}"
        spread = f"{r['spread'][0]:.1f}-{r['spread'][1]:.1f}"
        largest = f" {r['max_batch']} |" if args.max_batch else ""
        print(f"| {method} | {r['samples_per_s']:.1f} ({spread}) | {ratio} | {own} | {mfu} | {r['peak_memory_gb']:.2f} |{largest} {r['trainable_parameters']:,} |", flush=True)
    if "full" in speed and "deep-prefix" in speed:
        print(f"\nfull fine-tuning takes {speed['deep-prefix'] / speed['full']:.2f}x as long per sample as deep-prefix "
              "(Prefix-Tuning reports about 1.5x)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "device": device, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
