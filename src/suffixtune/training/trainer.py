"""Hugging Face Trainer that checkpoints only what trained, callbacks that stop a diverging run and print readable logs."""

from __future__ import annotations

import json
import math
from collections import defaultdict

import torch
from torch import nn
from transformers import PrinterCallback, ProgressCallback, Trainer, TrainerCallback

from ..heads import Head
from ..methods import Method


class ClassifierTrainer(Trainer):
    """Checkpoints hold the classifier's artifact (prompt, head, ...), never a copy of the frozen backbone.

    The head's parameters get their own optimizer group at `args.head_learning_rate`, when that is set. Each
    training log line also carries `TrainingDiagnostics`: pooled-feature, prompt and gradient norms.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.diagnostics = TrainingDiagnostics(self.model)
        self.trained = torch.zeros(2, dtype=torch.long)  # texts and their tokens (no padding) trained in this process

    def training_step(self, model, inputs, num_items_in_batch=None):
        mask = inputs["attention_mask"]
        self.trained += torch.tensor([mask.shape[0], int(mask.sum())])
        return super().training_step(model, inputs, num_items_in_batch)

    def trained_counts(self) -> tuple[int, int]:
        """(texts, tokens) trained since this process started, summed over processes; a resume counts only its own."""
        texts, tokens = self.accelerator.reduce(self.trained.to(self.accelerator.device), reduction="sum").tolist()
        return texts, tokens

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        head_rate = getattr(self.args, "head_learning_rate", None) or self.args.learning_rate
        if head_rate == self.args.learning_rate and not getattr(self.args, "head_only_steps", 0):
            return optimizer
        head = {id(p) for p in self.accelerator.unwrap_model(model or self.model).head_parameters()}
        for group in list(optimizer.param_groups):
            moved = [p for p in group["params"] if id(p) in head]
            group["params"] = [p for p in group["params"] if id(p) not in head]
            if moved:
                optimizer.add_param_group({**group, "params": moved, "lr": head_rate, "head": True})
        optimizer.param_groups[:] = [group for group in optimizer.param_groups if group["params"]]
        return optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """The usual schedule; with --head_only_steps the method's groups stay at rate 0 until then (LP-FT)."""
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        head_only = getattr(self.args, "head_only_steps", 0)
        steps = math.ceil(head_only * num_training_steps) if 0 < head_only < 1 else int(head_only)
        if steps and getattr(scheduler, "lr_lambdas", None) is not None:
            groups = scheduler.optimizer.param_groups
            scheduler.lr_lambdas = [
                rate if group.get("head") else (lambda step, rate=rate: rate(step) if step >= steps else 0.0)
                for rate, group in zip(scheduler.lr_lambdas, groups, strict=True)
            ]
            for group, rate, base in zip(groups, scheduler.lr_lambdas, scheduler.base_lrs, strict=True):
                group["lr"] = base * rate(scheduler.last_epoch)
        return scheduler

    def _clip_grad_norm(self, model):
        """Clip each task's gradients on their own when several train together, as K runs alone would."""
        self.diagnostics.gradients(self.accelerator.unwrap_model(model))  # before clipping
        groups = getattr(self.accelerator.unwrap_model(model), "parameter_groups", None)
        if groups is None or self.args.max_grad_norm is None or self.args.max_grad_norm <= 0:
            return super()._clip_grad_norm(model)
        norms = torch.stack([torch.as_tensor(self.accelerator.clip_grad_norm_(group, self.args.max_grad_norm)) for group in groups()])
        return norms.norm()

    def _get_grad_norm(self, model, grad_norm=None):
        if grad_norm is None:  # no clipping: the norms were not taken yet
            self.diagnostics.gradients(self.accelerator.unwrap_model(model))
        return super()._get_grad_norm(model, grad_norm)

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:
            logs.update(self.diagnostics.summary())
        super().log(logs, *args, **kwargs)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        self.accelerator.unwrap_model(self.model).save_pretrained(output_dir or self.args.output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        (model or self.model).load_trained_weights(resume_from_checkpoint)

    def _load_best_model(self) -> None:
        self.accelerator.unwrap_model(self.model).load_trained_weights(self.state.best_model_checkpoint)


SHOWN_IN_TEXT = ("loss", "grad_norm", "learning_rate", "train_runtime")  # and every eval_ metric but the timings


def log_line(logs: dict, state, log_format: str) -> str:
    """One log entry as JSON, or as a person reads it: `step 20/200, epoch 0.10: loss 0.557, grad norm 21.3, ...`."""
    logs = {k: v for k, v in logs.items() if k != "total_flos"}
    if log_format == "json":
        return json.dumps({"step": state.global_step, **logs})
    shown = {k: v for k, v in logs.items()
             if k in SHOWN_IN_TEXT or (k.startswith("eval_") and not k.endswith(("_runtime", "_per_second")))}
    values = ", ".join(f"{k.replace('_', ' ')} {v:.4g}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
                       for k, v in shown.items())
    return f"step {state.global_step}/{state.max_steps}, epoch {logs.get('epoch', state.epoch or 0):.2f}: {values}"


class ProgressBarLog(ProgressCallback):
    """Trainer's progress bars, with each log written under them by `log_line`."""

    def __init__(self, log_format: str):
        super().__init__()
        self.log_format = log_format

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            self.training_bar.write(log_line(logs, state, self.log_format))


class PrintedLog(TrainerCallback):
    """With --disable_tqdm: each log printed by `log_line`, as its own line."""

    def __init__(self, log_format: str):
        self.log_format = log_format

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            print(log_line(logs, state, self.log_format), flush=True)


def use_readable_logs(trainer: Trainer, log_format: str) -> None:
    """Swap Trainer's raw-dict log printing for `log_line`, keeping its progress bars unless tqdm is disabled
    (a notebook's own progress widget is left as it is)."""
    for raw, readable in ((ProgressCallback, ProgressBarLog), (PrinterCallback, PrintedLog)):
        if any(type(callback) is raw for callback in trainer.callback_handler.callbacks):
            trainer.remove_callback(raw)
            trainer.add_callback(readable(log_format))


class DivergenceCallback(TrainerCallback):
    """Stops training as soon as the loss or gradient norm is NaN or infinite, and remembers why."""

    def __init__(self):
        self.failure: str | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "grad_norm", "eval_loss"):
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(value):
                self.failure = self.failure or f"{key} became {value} at step {state.global_step}"
                control.should_training_stop = True


class TextCacheCallback(TrainerCallback):
    """Writes the text cache's pending entries at each epoch's end and after each evaluation."""

    def __init__(self, cache):
        self.cache = cache

    def on_epoch_end(self, args, state, control, **kwargs):
        self.cache.flush()

    def on_evaluate(self, args, state, control, **kwargs):
        self.cache.flush()


class TrainingDiagnostics:
    """Means over a logging interval of what tells a run that learns from one that does not.

    `pooled_norm`: L2 norm of the feature the head reads; `prompt_norm`: of each prompt vector; `method_grad_norm`
    and `head_grad_norm`: of the gradients of what the method trains and of the head, before clipping.
    """

    def __init__(self, model: nn.Module):
        self.heads = [m for m in model.modules() if isinstance(m, Head)]
        self.methods = [m for m in model.modules() if isinstance(m, Method)]
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = defaultdict(int)
        for head in self.heads:
            head.register_forward_pre_hook(self.pooled)

    def add(self, name: str, value: torch.Tensor) -> None:
        value = value.detach().float()
        self.sums[name] = self.sums[name] + value if name in self.sums else value  # stays on the device: no sync
        self.counts[name] += 1

    def pooled(self, head: nn.Module, inputs: tuple) -> None:
        if head.training:
            self.add("pooled_norm", inputs[0].norm(dim=-1).mean())

    def gradients(self, model: nn.Module) -> None:
        head = {id(p) for h in self.heads for p in h.parameters()}
        trainable = [p for p in model.parameters() if p.requires_grad and p.grad is not None]
        for name, params in (("head_grad_norm", [p for p in trainable if id(p) in head]),
                             ("method_grad_norm", [p for p in trainable if id(p) not in head])):
            if params:
                self.add(name, torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])))

    def summary(self) -> dict[str, float]:
        """The interval's means (and the prompt vectors' mean norm now), then start a new interval."""
        prompts = [m.prompt_vectors() for m in self.methods if m.prompt_vectors() is not None]
        for prompt in prompts:
            self.add("prompt_norm", prompt.detach().norm(dim=-1).mean())
        means = {name: round(float(total) / self.counts[name], 6) for name, total in self.sums.items()}
        self.sums, self.counts = {}, defaultdict(int)
        return means
