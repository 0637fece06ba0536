"""Many tasks, one pass: suffix-prompt tasks answered from one shared pass over each text."""

from .classifier import MultiTaskClassifier, TaskInfo, TextGroup, shared_pass_logits

__all__ = ["MultiTaskClassifier", "TaskInfo", "TextGroup", "shared_pass_logits"]
