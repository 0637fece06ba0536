"""Many tasks, one pass: suffix-prompt tasks answered (or written) from one shared pass over each text."""

from .classifier import MultiTaskClassifier, TaskInfo, TextGroup, shared_pass_logits
from .generator import MultiTaskGenerator, shared_source_generate

__all__ = ["MultiTaskClassifier", "MultiTaskGenerator", "TaskInfo", "TextGroup", "shared_pass_logits", "shared_source_generate"]
