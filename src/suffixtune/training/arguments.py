"""Run arguments as dataclasses; each field is one CLI flag (`--prompt_length` or `--prompt-length`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import transformers
from transformers import HfArgumentParser

from ..decoding import Decoding
from ..methods import get_method


@dataclass
class ModelArguments:
    model: str = field(
        default="smollm2-135m",
        metadata={"help": "Base causal LM: a hub id (gpt2, EleutherAI/gpt-neo-1.3B, ...), a local directory, or smollm2-135m (bundled)."},
    )
    dtype: str = field(
        default="float32",
        metadata={"help": "Dtype the frozen backbone is loaded in; prompt, head and loss always stay float32.", "choices": ["float32", "bfloat16", "float16"]},
    )


@dataclass
class DataArguments:
    task: str | None = field(default=None, metadata={"help": "Known task (sst2, cola, mrpc, rte, stsb, wnli, qnli, mnli, qqp, sms_spam)."})
    data: str | None = field(default=None, metadata={"help": "Directory with the task's files (GLUE TSVs or HF parquet); without it a known task loads from the hub."})
    train: str | None = field(default=None, metadata={"help": "Training file (csv, tsv, parquet, jsonl) for custom data or to override the task's."})
    validation: str | None = field(default=None, metadata={"help": "Validation file, like --train."})
    text_column: str | None = field(default=None, metadata={"help": "Text column of custom files."})
    text_pair_column: str | None = field(default=None, metadata={"help": "Second text column of custom files (sentence pairs)."})
    label_column: list[str] = field(
        default_factory=lambda: ["label"],
        metadata={"help": "Label column of custom files; labels may be names or integers. Several (--label_column a b, "
                  "or the flag repeated) train one suffix and head per column in one run, from one text pass."},
    )
    regression: bool = field(default=False, metadata={"help": "Custom labels are real numbers (one output, MSE loss)."})
    label_words: list[str] | None = field(default=None, metadata={"help": "One word per class for --head verbalizer, e.g. ' negative' ' positive'."})
    max_length: int = field(default=256, metadata={"help": "Longest text in tokens; longer texts are cut (the prompt never is)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on a seeded random subset of this many rows."})
    subset_seed: int | None = field(default=None, metadata={"help": "Seed of the --max_train_samples subset (default: --seed); fix it to train every seed on the same rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on a fixed random subset of this many validation rows (generation: sources)."})
    target_column: str | None = field(default=None, metadata={"help": "Custom generation data: the column the model learns to write (rows with one source are its references)."})
    max_target_length: int = field(default=96, metadata={"help": "Generation: longest target in tokens, kept free of the source (which is cut first)."})

    def __post_init__(self):
        if self.max_target_length < 2:
            raise ValueError(f"--max_target_length must be at least 2 (a token and the end of text), got {self.max_target_length}")
        for flag in ("max_train_samples", "max_eval_samples"):
            if getattr(self, flag) is not None and getattr(self, flag) < 1:
                raise ValueError(f"--{flag} must be at least 1 (a row count), got {getattr(self, flag)}")


@dataclass
class MethodArguments:
    method: str = field(
        default="suffix",
        metadata={"help": "Training method: suffix (default), suffix-lora, prefix, deep-prefix, lora, full, last-blocks or head "
                  "(linear probe). `suffixtune train --method NAME --help` lists its options."},
    )
    head: str | None = field(
        default=None,
        metadata={"help": "linear (default for classification): a new Linear on the pooled state; verbalizer: LM logits "
                  "of the label words; lm (generation, its only head): the LM's own output layer."},
    )
    standardize: str | None = field(
        default=None,
        metadata={"help": "features: the linear head trains on features centred and scaled by statistics of up to "
                  "512 training texts, taken at the start and folded into the head's weights when saved (artifacts "
                  "stay a plain Linear); none: raw features. Default: features for suffix, suffix-lora and deep-prefix, "
                  "where it was measured (docs/results.md), none for the others. The verbalizer head reads raw features.",
                  "choices": ["features", "none"]},
    )
    pooling: str = field(
        default="last",
        metadata={"help": "Hidden state the head reads: the last real position, or the mean over all real positions.",
                  "choices": ["last", "mean"]},
    )


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    """Hugging Face TrainingArguments with defaults measured for prompt methods (see docs/results.md)."""

    output_dir: str | None = field(default=None, metadata={"help": "Run directory: artifact, metrics.json, checkpoints.", "aliases": ["--output"]})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start afresh in an --output that holds another run: its checkpoints, record and artifact "
                  "are removed first (without it, such a directory is refused unless its settings match)."},
    )
    do_train: bool = field(default=True, metadata={"help": "Train; with --do_train False only evaluate the initial classifier (zero-shot)."})
    learning_rate: float | None = field(default=None, metadata={"help": "Peak learning rate; default: the method's own (3e-3 suffix, prefix, deep-prefix, head; 3e-4 deep-prefix --reparam; 5e-4 lora; 5e-5 last-blocks; 2e-5 full)."})
    head_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Peak learning rate of the linear head; default: 3e-3 for lora, last-blocks and full "
                  "(a new layer learns too slowly at their backbone rates), else --learning_rate."},
    )
    head_only_steps: float = field(
        default=0,
        metadata={"help": "Train only the head for this many steps (or this fraction of all steps, when below 1), "
                  "then the method too (LP-FT: linear probing, then fine-tuning)."},
    )
    num_train_epochs: float = field(default=1.0, metadata={"help": "Training epochs."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Eval batch size per device."})
    warmup_steps: float = field(default=0.06, metadata={"help": "Warm-up steps, or a fraction of all steps when below 1."})
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate: no, steps or epoch."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to checkpoint: no, steps, epoch or best."})
    save_total_limit: int | None = field(default=1, metadata={"help": "Checkpoints kept besides the best."})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "Keep the best checkpoint by the task's main metric."})
    logging_steps: float = field(default=10, metadata={"help": "Log every this many steps."})
    train_sampling_strategy: str = field(
        default="group_by_length",
        metadata={"help": "group_by_length (default) batches texts of similar length to waste little on padding.",
                  "choices": ["random", "sequential", "group_by_length", "batch_rebalance"]},
    )
    log_format: str = field(
        default="text",
        metadata={"help": "How training logs print: text (one line a person reads, under the progress bar) or json "
                  "(one JSON object per log).", "choices": ["text", "json"]},
    )
    report_to: None | str | list[str] = field(default="none", metadata={"help": "Loggers: none, tensorboard, wandb, mlflow, all."})
    frozen_text: bool = field(
        default=True,
        metadata={"help": "suffix and head: run the text without gradient, then only the suffix positions (same "
                  "loss and gradients, less work); false: autograd through one full pass, for comparison."},
    )
    text_cache: str = field(
        default="auto",
        metadata={"help": "suffix and head: keep each text's keys/values (head: its pooled features) after the first "
                  "pass, so later epochs and evaluations run only the suffix. auto: in memory under "
                  "--text_cache_budget, else on disk, else off (and off when no text is read twice).",
                  "choices": ["auto", "memory", "disk", "off"]},
    )
    text_cache_budget: float | None = field(
        default=None,
        metadata={"help": "Memory for the text cache in GB; default: a quarter of the device's memory (RAM on CPU)."},
    )
    text_cache_dir: str | None = field(
        default=None, metadata={"help": "Where --text_cache disk keeps its shards; default: ~/.cache/suffixtune/text-cache."}
    )

    def __post_init__(self):
        for flag in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            if getattr(self, flag) < 1:
                raise ValueError(f"--{flag} must be at least 1, got {getattr(self, flag)}")
        for flag in ("learning_rate", "head_learning_rate"):
            if getattr(self, flag) is not None and not getattr(self, flag) > 0:
                raise ValueError(f"--{flag} must be positive, got {getattr(self, flag):g}")
        if self.dataloader_pin_memory and not torch.cuda.is_available():
            self.dataloader_pin_memory = False  # pinning needs a GPU; without one torch only warns that it is unused
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"--seed must be from 0 to 2**32 - 1 (numpy's range), got {self.seed}")
        if self.do_train and self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ValueError(f"--num_train_epochs {self.num_train_epochs:g} trains nothing: give a positive number of "
                             "epochs or --max_steps (or --do_train false to only evaluate)")
        super().__post_init__()


def train_parser(method: str = "suffix", **parser_options) -> HfArgumentParser:
    """Flags of the run plus those of `method`'s config (other methods' options are not accepted)."""
    return HfArgumentParser(
        [ModelArguments, DataArguments, MethodArguments, get_method(method).config_class, TrainingArguments, Decoding],
        prog="suffixtune train",
        description=f"Train a classifier or generator on a frozen causal LM with --method {method} (options below; another "
        "method's options show with --method NAME --help); every Hugging Face TrainingArguments field is a flag.",
        **parser_options,
    )
