"""One run end to end: check options, read data, build the classifier, train with Trainer, check, record."""

from __future__ import annotations

import logging
import platform
import resource
import subprocess
import time
from collections.abc import Callable, Container
from dataclasses import asdict, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import DataCollatorWithPadding, EvalPrediction, set_seed

from .. import __version__
from ..artifacts import write_json
from ..backbone import load_backbone
from ..classifier import Classifier, check_pooling
from ..decoding import Decoding
from ..errors import ConfigError, DataError, RunFailed
from ..heads import check_head
from ..methods import MethodConfig, get_method
from ..metrics import collapse_reason, compute_metrics, did_not_learn, non_finite_reason, predictions_from_logits
from ..multitask.training import MultiTaskTrainingModel
from ..tasks import TASKS, Task, get_task
from ..tasks.data import Split, custom_task, load_split, tokenize
from ..text_cache import open_text_cache
from .arguments import DataArguments, MethodArguments, ModelArguments, TrainingArguments
from .resume import RunSettingsCallback, prepare_run_directory, run_directory_lock, run_settings
from .trainer import ClassifierTrainer, DivergenceCallback, TextCacheCallback, use_readable_logs

logger = logging.getLogger(__name__)


STANDARDIZATION_TEXTS = 512  # training texts whose features fix the head's standardisation


def resolve_tasks(data: DataArguments) -> list[Task]:
    """The run's task, or with several --label_column one task per column (named after it) on the same texts."""
    if data.task is not None:
        if len(data.label_column) > 1:
            raise ConfigError(f"several --label_column ({data.label_column}) need custom data (--train/--validation), not --task")
        tasks = [get_task(data.task)]
    elif data.train is not None and data.target_column is not None:
        if data.text_column is None:
            raise DataError("custom generation data needs --text_column (the source) beside --target_column")
        if data.validation is None:
            raise DataError("custom data needs --validation FILE to evaluate on")
        columns = (data.text_column,) if data.text_pair_column is None else (data.text_column, data.text_pair_column)
        tasks = [Task(name=Path(data.train).stem, kind="generation", text_columns=columns, target_column=data.target_column,
                      label_names=None, metrics=("bleu", "rouge_l"))]
    elif data.train is not None:
        if data.text_column is None:
            raise DataError("custom data needs --text_column (and --text_pair_column for sentence pairs)")
        if data.validation is None:
            raise DataError("custom data needs --validation FILE to evaluate on")
        if len(set(data.label_column)) != len(data.label_column):
            raise ConfigError(f"--label_column names a column twice: {data.label_column}")
        tasks = [
            custom_task(data.train, data.text_column, data.text_pair_column, column, data.regression)
            for column in data.label_column
        ]
        if len(tasks) > 1:
            tasks = [replace(task, name=column) for task, column in zip(tasks, data.label_column, strict=True)]
    else:
        raise DataError("pass --task NAME (with --data DIR, or from the hub) or custom files with --train/--validation")
    if tasks[0].is_generation and (data.label_words is not None or data.label_column != ["label"] or data.regression):
        given = "--label_words" if data.label_words is not None else "--regression" if data.regression else "--label_column"
        raise ConfigError(f"task {tasks[0].name!r} writes text (generation): {given} applies to classification only")
    if data.label_words is not None:
        if len(tasks) > 1:
            raise ConfigError("--label_words serves one label column; train columns with label words one per run")
        tasks = [replace(tasks[0], label_words=tuple(data.label_words))]
    return tasks


def check_options(
    task: Task, options: MethodArguments, method_config: MethodConfig, model: ModelArguments, args: TrainingArguments
) -> None:
    """Refuse combinations that cannot work before anything heavy loads."""
    method = get_method(options.method)
    if not isinstance(method_config, method.config_class):
        raise ConfigError(f"--method {options.method} takes a {method.config_class.__name__}, not {type(method_config).__name__}")
    check_head(options.head, task.num_labels, task.label_words)
    check_pooling(options.pooling)
    method.check(method_config, options.head, model.dtype, checkpointing_asked(args), args.do_train)
    why = no_frozen_text(options.method, args)
    if args.text_cache in ("memory", "disk") and why:
        raise ConfigError(f"--text_cache {args.text_cache} needs the frozen-text path, but {why}; use --text_cache auto or off")


def checkpointing_asked(args: TrainingArguments) -> bool:
    """--gradient_checkpointing (or its new name); Trainer turns it on only when training starts."""
    return bool(getattr(args, "activation_checkpointing", None) or args.gradient_checkpointing)


def no_frozen_text(method_name: str, args: TrainingArguments) -> str | None:
    """Why this run cannot train on the frozen-text path, or None if it can."""
    if not get_method(method_name).shares_text_cache:
        return f"--method {method_name} puts trainable state before or inside the text"
    if not args.frozen_text:
        return "--frozen_text false runs every text with gradient"
    return "--gradient_checkpointing keeps the full pass" if checkpointing_asked(args) else None


def subsample(split: Split, limit: int | None, seed: int) -> Split:
    if limit is None or limit >= len(split.rows):
        return split
    return split.select(np.sort(np.random.default_rng(seed).choice(len(split.rows), size=limit, replace=False)))


class EvalRecorder:
    """Trainer's compute_metrics that also keeps each evaluation's predictions, so none is run twice.

    With several tasks the logits sit side by side: each task's metrics are named `<task>_<metric>`, and
    `task_mean` (the mean of each task's main metric) selects the best checkpoint.
    """

    def __init__(self, tasks: list[Task]):
        self.tasks = tasks
        self.trainer: ClassifierTrainer | None = None
        self.results: dict[int, tuple[dict[str, float], list[np.ndarray], list[np.ndarray]]] = {}

    def __call__(self, prediction: EvalPrediction) -> dict[str, float]:
        logits, labels = prediction.predictions, prediction.label_ids
        if len(self.tasks) == 1:
            per_task_logits, per_task_labels = [logits], [labels]
        else:
            sizes = np.cumsum([task.num_labels for task in self.tasks])[:-1]
            per_task_logits, per_task_labels = np.split(logits, sizes, axis=1), list(labels.T)
        predictions = [predictions_from_logits(x, t.is_regression) for x, t in zip(per_task_logits, self.tasks, strict=True)]
        per_task = [compute_metrics(t.metrics, p, y) for t, p, y in zip(self.tasks, predictions, per_task_labels, strict=True)]
        if len(self.tasks) == 1:
            metrics = per_task[0]
        else:
            metrics = {f"{t.name}_{name}": value for t, m in zip(self.tasks, per_task, strict=True) for name, value in m.items()}
            metrics["task_mean"] = float(np.mean([m[t.metrics[0]] for t, m in zip(self.tasks, per_task, strict=True)]))
        self.results[self.trainer.state.global_step] = (per_task, predictions, per_task_labels)
        return metrics


def train(
    model_args: ModelArguments,
    data_args: DataArguments,
    method_args: MethodArguments,
    method_config: MethodConfig,
    args: TrainingArguments,
    decoding: Decoding | None = None,
) -> dict[str, Any]:
    """Train (or with --do_train False, only evaluate) and write the artifact and metrics.json to args.output_dir;
    a generation task trains a `Generator` (`training.generation`), evaluated by decoding with `decoding`.

    With several --label_column, one suffix and head per column train together from one text pass, and each
    column's artifact (with its own metrics.json) goes to output_dir/<column>. The run directory is locked meanwhile.
    """
    with run_directory_lock(args):  # held until the record is written
        started, versions = time.perf_counter(), package_versions()  # the code that runs is the code at the start
        reset_peak_memory()
        tasks = resolve_tasks(data_args)
        if tasks[0].is_generation:
            if args.output_dir is None:
                raise ConfigError("pass --output DIR for the artifact and metrics.json")
            from .generation import train_generator

            return train_generator(tasks[0], model_args, data_args, method_args, method_config, args,
                                   decoding or Decoding(), started, versions)
        if method_args.head is None:
            method_args.head = "linear"
        for task in tasks:
            check_options(task, method_args, method_config, model_args, args)
        if len(tasks) > 1:
            check_multitask(method_args, args)
        if args.output_dir is None:
            raise ConfigError("pass --output DIR for the artifact and metrics.json")
        method = get_method(method_args.method)
        if args.learning_rate is None:
            args.learning_rate = method.learning_rate_for(method_config)
        if args.head_learning_rate is None:
            args.head_learning_rate = method.default_head_learning_rate or args.learning_rate
        if method_args.standardize is None:
            method_args.standardize = method.default_standardize
        args.metric_for_best_model = tasks[0].metrics[0] if len(tasks) == 1 else "task_mean"
        args.greater_is_better = True
        settings = run_settings(model_args, data_args, method_args, method_config, args)
        with args.main_process_first(desc="checking the run directory"):  # the others read it after the main process wrote it
            resume, resume_changes = prepare_run_directory(args, settings)
        train_split = load_splits(tasks, "train", data_dir=data_args.data, file=data_args.train) if args.do_train else None
        validation = load_splits(tasks, "validation", data_dir=data_args.data, file=data_args.validation)

        set_seed(args.seed)
        backbone, tokenizer = load_backbone(model_args.model, dtype=getattr(torch, model_args.dtype))
        classifiers = {
            task.name: Classifier.build(
                backbone, tokenizer, task, method_args.method, method_config, method_args.head, data_args.max_length,
                method_args.pooling,
            )
            for task in tasks
        }
        for classifier in classifiers.values():
            classifier.frozen_text = args.frozen_text
        model = next(iter(classifiers.values())) if len(tasks) == 1 else MultiTaskTrainingModel(classifiers)
        max_length = min(c.classifier_config.max_length for c in classifiers.values())

        eval_rows = subsample(validation, data_args.max_eval_samples, seed=0)
        eval_dataset = tokenize(eval_rows, tokenizer, max_length)
        eval_dataset = eval_dataset.select(np.argsort(eval_dataset["length"], kind="stable"))  # less padding
        train_dataset = None
        if train_split is not None:
            subset_seed = args.seed if data_args.subset_seed is None else data_args.subset_seed
            train_dataset = tokenize(subsample(train_split, data_args.max_train_samples, subset_seed), tokenizer, max_length)

        if train_dataset is not None and method_args.standardize == "features":
            sample = np.random.default_rng(args.seed).permutation(len(train_dataset))[:STANDARDIZATION_TEXTS]
            token_ids = train_dataset.select(sample)["input_ids"]
            for classifier in classifiers.values():
                if classifier.head.can_standardize:
                    classifier.standardize_head(token_ids)

        frozen_text = no_frozen_text(method_args.method, args) is None
        if frozen_text and not all(c.runs_text_apart_when_training() for c in classifiers.values()):
            frozen_text = False
            if args.text_cache in ("memory", "disk"):
                logger.warning("--text_cache %s is off: texts of up to %d tokens with the prompt could run past %s's "
                               "attention window, so every text runs the full pass", args.text_cache, max_length,
                               backbone.name_or_path)
        if frozen_text:
            model.text_cache = open_text_cache(
                args.text_cache, backbone, tokenizer, max_length,
                [*(train_dataset["length"] if train_dataset is not None else []), *eval_dataset["length"]],
                text_dtype(backbone, args), with_kv=any(c.method.suffix_embeddings() is not None for c in classifiers.values()),
                reused=texts_read_again(args, 0 if train_dataset is None else len(train_dataset)),
                budget=None if args.text_cache_budget is None else int(args.text_cache_budget * 1e9), directory=args.text_cache_dir,
            )
        divergence, recorder = DivergenceCallback(), EvalRecorder(tasks)
        callbacks = [divergence, RunSettingsCallback(settings)] + ([TextCacheCallback(model.text_cache)] if model.text_cache else [])
        trainer = recorder.trainer = ClassifierTrainer(
            model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
            data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=recorder, callbacks=callbacks,
        )
        use_readable_logs(trainer, args.log_format)
        train_metrics, final_step = train_then_choose(
            trainer, resume, recorder.results, lambda: trainer.predict(eval_dataset, metric_key_prefix="eval"))
        per_task, predictions, labels = recorder.results[final_step]
        if model.text_cache is not None:
            model.text_cache.flush()

        shared = {
            "method": method_args.method,
            "method_facts": method.facts(),
            "prompt_length": next(iter(classifiers.values())).method.added_positions or None,
            "head": method_args.head,
            "pooling": method_args.pooling,
            "model": model_args.model,
            "train_rows": 0 if train_dataset is None else len(train_dataset),
            "eval_rows": len(eval_dataset),
            "text_pass": "frozen" if frozen_text else "full",
            "text_cache": None if model.text_cache is None else model.text_cache.summary(),
            "tasks_trained_together": [task.name for task in tasks] if len(tasks) > 1 else None,
            **how_it_ran(trainer, train_metrics, started, versions, resume, resume_changes),
        }
        records = {}
        for task, metrics, task_predictions, task_labels in zip(tasks, per_task, predictions, labels, strict=True):
            classifier = classifiers[task.name]
            failure = divergence.failure or collapse_reason(task_predictions, task_labels, task.label_names)
            no_learning = None if failure else did_not_learn(task_predictions, task_labels, task.label_names)
            if no_learning:
                logger.warning("%s: %s", task.name, no_learning)
            records[task.name] = {
                "status": "failed" if failure else "ok",
                "failure": failure,
                "did_not_learn": no_learning,
                "task": task.name,
                **shared,
                "eval": metrics,
                "trainable_parameters": sum(p.numel() for p in classifier.parameters() if p.requires_grad),
                "total_parameters": sum(p.numel() for p in classifier.parameters()),
                "config": {
                    "model": asdict(model_args), "data": asdict(data_args), "method": asdict(method_args),
                    "method_config": classifier.classifier_config.method_config, "training": args.to_dict(),
                    "template": task.template, "label_names": task.label_names, "max_length": max_length,
                },
            }
        if len(tasks) == 1:
            record = next(iter(records.values()))
        else:
            failures = [f"{name}: {r['failure']}" for name, r in records.items() if r["failure"]]
            record = {
                "status": "failed" if failures else "ok", "failure": "; ".join(failures) or None, "tasks": records,
                "eval": {f"{name}_{key}": value for name, r in records.items() for key, value in r["eval"].items()},
            }
        if trainer.is_world_process_zero():  # under torchrun / accelerate launch, one process writes
            model.save_pretrained(args.output_dir)
            for name, task_record in records.items():
                write_json(task_record, Path(args.output_dir) / ("" if len(tasks) == 1 else name) / "metrics.json")
            if len(tasks) > 1:
                write_json(record, Path(args.output_dir) / "metrics.json")
        if record["failure"]:
            raise RunFailed(f"{args.output_dir}: run failed: {record['failure']}")
        return record


def train_then_choose(trainer, resume: str | None, evaluated: Container[int], evaluate: Callable[[], object]) -> tuple[dict[str, float], int]:
    """Train (if there is training data), resuming from `resume`; then the step whose weights the run keeps (the best
    checkpoint's, else the last), after `evaluate()` where those weights were not evaluated in this process."""
    train_metrics: dict[str, float] = {}
    if trainer.train_dataset is not None:
        if resume:
            logger.warning("resuming from checkpoint %s", resume)
        train_metrics = trainer.train(resume_from_checkpoint=resume).metrics
    final_step = (trainer.state.best_global_step if trainer.args.load_best_model_at_end else None) or trainer.state.global_step
    if final_step not in evaluated:
        evaluate()
        final_step = trainer.state.global_step
    return train_metrics, final_step


def check_multitask(options: MethodArguments, args: TrainingArguments) -> None:
    why = no_frozen_text(options.method, args)
    if why:
        raise ConfigError(f"several --label_column train from one shared text pass, but {why}; train one column per run")


def load_splits(tasks: list[Task], split: str, **where) -> Split:
    """One split's rows; with several tasks (label columns of one file) the labels are one tuple per row."""
    splits = [load_split(task, split, **where) for task in tasks]
    if len(splits) == 1:
        return splits[0]
    return replace(splits[0], labels=[list(labels) for labels in zip(*(s.labels for s in splits), strict=True)])


def evaluate_artifact(
    directory: str, data_args: DataArguments, batch_size: int = 64, device: str | None = None, split_name: str = "validation",
    model: str | None = None, decoding: Decoding | None = None,
) -> dict[str, Any]:
    """Metrics of a saved artifact on one split of its task (default validation), or on --validation FILE; a
    generation artifact's by decoding each source with `decoding`."""
    from ..generator import load_artifact

    return evaluate_classifier(load_artifact(directory, device=device, model=model), data_args, batch_size, split_name, decoding)


def evaluate_classifier(
    classifier: Classifier, data_args: DataArguments, batch_size: int = 64, split_name: str = "validation",
    decoding: Decoding | None = None,
) -> dict[str, Any]:
    if classifier.classifier_config.task_kind == "generation":
        from .generation import evaluate_generator

        return evaluate_generator(classifier, data_args, decoding or Decoding(), batch_size, split_name)
    task = classifier.classifier_config.as_task()
    if task.name in TASKS and data_args.validation is None:
        task = replace(get_task(task.name), label_names=task.label_names)
    split = load_split(task, split_name, data_dir=data_args.data, file=data_args.validation)
    split = subsample(split, data_args.max_eval_samples, seed=0)
    logits = classifier.predict_logits(split.rows, batch_size).numpy()
    predictions = predictions_from_logits(logits, task.is_regression)
    labels = np.asarray(split.labels)
    broken = non_finite_reason(logits)
    metrics = {name: None for name in task.metrics} if broken else compute_metrics(task.metrics, predictions, labels)
    failure = broken or collapse_reason(predictions, labels, task.label_names)
    return {"task": task.name, "source": split.source, "rows": len(labels), "failure": failure, **metrics}


def text_dtype(backbone, args: TrainingArguments) -> torch.dtype:
    """The dtype the text's keys and values come out in: autocast's, else the backbone's."""
    if args.bf16:
        return torch.bfloat16
    if args.fp16:
        return torch.float16
    return backbone.get_input_embeddings().weight.dtype


def texts_read_again(args: TrainingArguments, train_rows: int) -> bool:
    """Whether any text runs twice: a second epoch, or evaluations every N steps."""
    if not train_rows:
        return False
    if args.max_steps > 0:
        epochs = args.max_steps * args.train_batch_size * args.gradient_accumulation_steps * args.world_size / train_rows
    else:
        epochs = args.num_train_epochs
    return epochs > 1 or str(args.eval_strategy).endswith("steps")


def trained_speed(trainer: ClassifierTrainer, runtime: float | None) -> dict[str, float | int | None]:
    """Texts and text tokens (not prompt positions, not padding) trained in this process, and per second."""
    texts, tokens = trainer.trained_counts()
    return {
        "train_samples": texts, "train_tokens": tokens,
        "train_samples_per_second": texts / runtime if runtime else None,
        "train_tokens_per_second": tokens / runtime if runtime else None,
    }


def reset_peak_memory() -> None:
    """Start the run's peak memory from now, so runs in one worker process do not inherit each other's peaks."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets the peak resident set size (VmHWM)
    except OSError:
        pass


def peak_memory_bytes() -> int:
    """Peak GPU memory allocated, or on CPU the peak resident set size, since `reset_peak_memory`."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated()
    try:
        status = Path("/proc/self/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def how_it_ran(
    trainer: ClassifierTrainer, train_metrics: dict[str, Any], started: float, versions: dict[str, str], resume: str | None,
    resume_changes: list[tuple],
) -> dict[str, Any]:
    """The part of a run's record every task kind shares: its curves, speed, time, memory, seed, resumption, versions."""
    history = trainer.state.log_history
    return {
        "epochs": [entry for entry in history if "eval_loss" in entry],
        "train_log": [entry for entry in history if "loss" in entry],  # with TrainingDiagnostics
        **trained_speed(trainer, train_metrics.get("train_runtime")),
        "train_runtime_s": train_metrics.get("train_runtime"),
        "wall_time_s": time.perf_counter() - started,
        "peak_memory_bytes": peak_memory_bytes(),
        "seed": trainer.args.seed,
        "resumed_from": resume,
        "resumed_with_changes": [{"flag": name, "stored": old, "now": new} for _, name, old, new in resume_changes] or None,
        "processes": trainer.args.world_size,
        "versions": versions,
        "machine": machine_facts(),
    }


def machine_facts() -> dict[str, Any]:
    """What the run ran on: the same seed reproduces to the bit on one machine, but not across CPU models."""
    accelerator = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"cpu": cpu_model(), "cpu_threads": torch.get_num_threads(), "accelerator": accelerator}


def cpu_model() -> str:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        return next(line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def package_versions() -> dict[str, str]:
    versions = {name: version(name) for name in ("torch", "transformers", "peft", "datasets", "accelerate")}
    versions["suffixtune"] = __version__
    versions["suffixtune_commit"] = source_commit()
    return versions


def source_commit() -> str | None:
    """The git commit suffixtune runs from, with "+dirty" if its package files differ from it; None outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=5).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("+dirty" if dirty else "")) or None
