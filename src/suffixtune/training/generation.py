"""A generation run end to end: sources and references in, a generator trained with Trainer on the target tokens,
each evaluation scored by decoding the validation sources (BLEU selects the best checkpoint), the record out."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import DataCollatorForSeq2Seq, set_seed

from ..artifacts import write_json
from ..backbone import load_backbone
from ..decoding import Decoding
from ..errors import ConfigError, RunFailed
from ..generator import Generator, check_generation_method
from ..methods import MethodConfig, get_method
from ..tasks import TASKS, Task, get_task
from ..tasks.generation import Sources, generation_metrics, load_sources, official_e2e_metrics, tokenize_pairs
from .arguments import DataArguments, MethodArguments, ModelArguments, TrainingArguments
from .resume import RunSettingsCallback, prepare_run_directory, run_settings
from .run import checkpointing_asked, how_it_ran, train_then_choose
from .trainer import ClassifierTrainer, DivergenceCallback, use_readable_logs

SHOWN_GENERATIONS = 5  # sources written into the record with their references, for a reader to judge


def check_generation_options(task: Task, options: MethodArguments, method_config: MethodConfig, model: ModelArguments,
                             args: TrainingArguments) -> None:
    """Refuse what a generation run cannot do, before any model loads."""
    if options.head not in (None, "lm"):
        raise ConfigError(f"task {task.name!r} is a generation task: it writes with the LM's own head (--head lm), "
                          f"not --head {options.head}")
    if options.standardize == "features":
        raise ConfigError("--standardize features applies to the linear head of a classifier; a generation task writes "
                          "with the LM's own head: leave --standardize out")
    check_generation_method(options.method)
    get_method(options.method).check(method_config, "lm", model.dtype, checkpointing_asked(args), args.do_train)


def sample_sources(sources: Sources, limit: int | None) -> Sources:
    """A fixed random subset of `limit` sources (seed 0), in file order."""
    if limit is None or limit >= len(sources.rows):
        return sources
    return sources.select(np.sort(np.random.default_rng(0).choice(len(sources.rows), size=limit, replace=False)))


class GenerationScorer:
    """Decodes the validation sources at every evaluation and keeps what was written, by step. BLEU and ROUGE-L
    only: the official E2E metrics (METEOR starts Java) are computed once, for the weights the run keeps."""

    def __init__(self, generator: Generator, sources: Sources, decoding: Decoding, batch_size: int):
        self.generator, self.sources, self.decoding, self.batch_size = generator, sources, decoding, batch_size
        self.results: dict[int, tuple[dict[str, float], list[str]]] = {}

    def __call__(self, step: int) -> dict[str, float]:
        written = self.generator.generate(self.sources.rows, self.decoding, self.batch_size)
        metrics = generation_metrics(written, self.sources.references, official=False)
        self.results[step] = (metrics, written)
        return metrics


class GeneratorTrainer(ClassifierTrainer):
    """Each evaluation adds the scores of decoding the validation sources to the loss, under the same `eval_`
    names, so `--metric_for_best_model bleu` selects checkpoints and every log line shows them."""

    def __init__(self, *args, scorer: GenerationScorer, **kwargs):
        super().__init__(*args, **kwargs)
        self.scorer = scorer
        self.pending: dict[str, float] = {}

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        scores = self.scorer(self.state.global_step)
        self.pending = {f"{metric_key_prefix}_{name}": value for name, value in scores.items()}
        return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if self.pending and any(key.endswith("_loss") for key in logs):
            logs.update(self.pending)  # the dict evaluate() returns, so best-checkpoint selection sees the scores
            self.pending = {}
        super().log(logs, *args, **kwargs)


def train_generator(
    task: Task,
    model_args: ModelArguments,
    data_args: DataArguments,
    method_args: MethodArguments,
    method_config: MethodConfig,
    args: TrainingArguments,
    decoding: Decoding,
    started: float,
    versions: dict[str, str],
) -> dict[str, Any]:
    """Train (or with --do_train False only evaluate) a generator; write the artifact and metrics.json to args.output_dir.
    The caller, `train`, holds the run directory's lock, and started the clock and read the versions."""
    check_generation_options(task, method_args, method_config, model_args, args)
    method_args.head, method_args.standardize = "lm", "none"
    method = get_method(method_args.method)
    if args.learning_rate is None:
        args.learning_rate = method.learning_rate_for(method_config)
    args.head_learning_rate = args.learning_rate  # the LM head adds no parameters of its own
    args.metric_for_best_model, args.greater_is_better = task.metrics[0], True
    args.prediction_loss_only = True  # the scores come from decoding, not from the loss pass's logits
    settings = run_settings(model_args, data_args, method_args, method_config, args, decoding)
    with args.main_process_first(desc="checking the run directory"):
        resume, resume_changes = prepare_run_directory(args, settings)
    where = {"data_dir": data_args.data}
    train_sources = load_sources(task, "train", file=data_args.train, **where) if args.do_train else None
    validation = sample_sources(load_sources(task, "validation", file=data_args.validation, **where), data_args.max_eval_samples)

    set_seed(args.seed)
    backbone, tokenizer = load_backbone(model_args.model, dtype=getattr(torch, model_args.dtype))
    generator = Generator.build(backbone, tokenizer, task, method_args.method, method_config, data_args.max_length,
                                data_args.max_target_length)
    generator.frozen_text = args.frozen_text
    config = generator.classifier_config
    eval_dataset = tokenize_pairs(task, validation, tokenizer, config.max_length, data_args.max_target_length)
    train_dataset = None
    if train_sources is not None:
        train_dataset = tokenize_pairs(task, train_sources, tokenizer, config.max_length, data_args.max_target_length)
        if data_args.max_train_samples is not None and data_args.max_train_samples < len(train_dataset):
            subset_seed = args.seed if data_args.subset_seed is None else data_args.subset_seed
            rows = np.random.default_rng(subset_seed).choice(len(train_dataset), size=data_args.max_train_samples, replace=False)
            train_dataset = train_dataset.select(np.sort(rows))

    scorer = GenerationScorer(generator, validation, decoding, args.per_device_eval_batch_size)
    divergence = DivergenceCallback()
    trainer = GeneratorTrainer(
        model=generator, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True), callbacks=[divergence, RunSettingsCallback(settings)],
        scorer=scorer,
    )
    use_readable_logs(trainer, args.log_format)
    train_metrics, final_step = train_then_choose(trainer, resume, scorer.results, trainer.evaluate)
    metrics, written = scorer.results[final_step]
    metrics = {**metrics, **official_e2e_metrics(written, validation.references)}
    failure = divergence.failure
    record = {
        "status": "failed" if failure else "ok",
        "failure": failure,
        "task": task.name,
        "task_kind": "generation",
        "method": method_args.method,
        "method_facts": method.facts(),
        "prompt_length": generator.method.added_positions or None,
        "head": "lm",
        "model": model_args.model,
        "eval": metrics,
        "decoding": asdict(decoding),
        "samples": [{"source": row, "written": text, "references": refs}
                    for row, text, refs in list(zip(validation.rows, written, validation.references, strict=True))[:SHOWN_GENERATIONS]],
        "train_rows": 0 if train_dataset is None else len(train_dataset),
        "eval_rows": len(validation.rows),
        "text_pass": "frozen" if generator.runs_text_apart_when_training() else "full",
        **how_it_ran(trainer, train_metrics, started, versions, resume, resume_changes),
        "trainable_parameters": sum(p.numel() for p in generator.parameters() if p.requires_grad),
        "total_parameters": sum(p.numel() for p in generator.parameters()),
        "config": {
            "model": asdict(model_args), "data": asdict(data_args), "method": asdict(method_args),
            "method_config": config.method_config, "training": args.to_dict(), "template": task.template,
            "max_length": config.max_length, "max_target_length": config.max_target_length,
        },
    }
    if trainer.is_world_process_zero():
        generator.save_pretrained(args.output_dir)
        write_json(record, Path(args.output_dir) / "metrics.json")
    if failure:
        raise RunFailed(f"{args.output_dir}: run failed: {failure}")
    return record


def evaluate_generator(generator: Generator, data_args: DataArguments, decoding: Decoding, batch_size: int = 16,
                       split_name: str = "validation") -> dict[str, Any]:
    """BLEU and ROUGE-L of a generator on one split of its task (or --validation FILE), all references at once."""
    task = generator.classifier_config.as_task()
    if task.name in TASKS and data_args.validation is None:
        task = replace(get_task(task.name), template=task.template)
    sources = sample_sources(load_sources(task, split_name, data_dir=data_args.data, file=data_args.validation), data_args.max_eval_samples)
    written = generator.generate(sources.rows, decoding, batch_size)
    return {"task": task.name, "source": sources.file, "rows": len(sources.rows), "failure": None,
            **generation_metrics(written, sources.references)}
