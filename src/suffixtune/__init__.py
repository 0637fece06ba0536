"""suffixtune: parameter-efficient text classification with frozen causal LMs and suffix prompts."""

__version__ = "0.1.0"

from .backbone import load_backbone  # noqa: E402
from .classifier import Classifier  # noqa: E402
from .tasks import Task, get_task  # noqa: E402

__all__ = ["Classifier", "Task", "__version__", "get_task", "load_backbone"]
