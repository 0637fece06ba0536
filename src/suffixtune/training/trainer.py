"""Hugging Face Trainer that checkpoints only what trained, and a callback that stops a diverging run."""

from __future__ import annotations

import math

import torch
from transformers import Trainer, TrainerCallback


class ClassifierTrainer(Trainer):
    """Checkpoints hold the classifier's artifact (prompt, head, ...), never a copy of the frozen backbone.

    The head's parameters get their own optimizer group at `args.head_learning_rate`, when that is set.
    """

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        head_rate = getattr(self.args, "head_learning_rate", None)
        if head_rate is None or head_rate == self.args.learning_rate:
            return optimizer
        head = {id(p) for p in self.accelerator.unwrap_model(model or self.model).head_parameters()}
        for group in list(optimizer.param_groups):
            moved = [p for p in group["params"] if id(p) in head]
            group["params"] = [p for p in group["params"] if id(p) not in head]
            if moved:
                optimizer.add_param_group({**group, "params": moved, "lr": head_rate})
        optimizer.param_groups[:] = [group for group in optimizer.param_groups if group["params"]]
        return optimizer

    def _clip_grad_norm(self, model):
        """Clip each task's gradients on their own when several train together, as K runs alone would."""
        groups = getattr(self.accelerator.unwrap_model(model), "parameter_groups", None)
        if groups is None or self.args.max_grad_norm is None or self.args.max_grad_norm <= 0:
            return super()._clip_grad_norm(model)
        norms = torch.stack([torch.as_tensor(self.accelerator.clip_grad_norm_(group, self.args.max_grad_norm)) for group in groups()])
        return norms.norm()

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        self.accelerator.unwrap_model(self.model).save_pretrained(output_dir or self.args.output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        (model or self.model).load_trained_weights(resume_from_checkpoint)

    def _load_best_model(self) -> None:
        self.accelerator.unwrap_model(self.model).load_trained_weights(self.state.best_model_checkpoint)


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
