"""Training and evaluation runs: arguments, the Trainer, and the run record."""

from .arguments import DataArguments, MethodArguments, ModelArguments, TrainingArguments, train_parser
from .run import RunFailed, evaluate_artifact, train

__all__ = ["DataArguments", "MethodArguments", "ModelArguments", "RunFailed", "TrainingArguments", "evaluate_artifact", "train", "train_parser"]
