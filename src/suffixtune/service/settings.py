"""Limits and batching of the service: plain settings, readable without loading the model stack."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigError


@dataclass
class ServiceSettings:
    """Limits and batching of `suffixtune serve`; each field is a flag of it."""

    max_batch_texts: int = field(default=64, metadata={"help": "Texts per model call, gathered across requests."})
    max_wait_ms: float = field(default=5.0, metadata={"help": "How long a request waits for others to join its batch."})
    max_texts: int = field(default=64, metadata={"help": "Texts per request; more get a 413."})
    max_text_chars: int = field(default=20_000, metadata={"help": "Characters per text, checked before tokenizing; more get a 413."})
    max_num_beams: int = field(default=8, metadata={"help": "Beam width a generation request may ask for; more get a 413."})
    long_texts: Literal["truncate", "reject"] = field(
        default="truncate",
        metadata={"help": "Texts longer than a task's max_length tokens: cut (and listed in the answer's truncated) or refused with a 413."},
    )

    def __post_init__(self):
        if self.long_texts not in ("truncate", "reject"):
            raise ConfigError(f"long_texts must be 'truncate' or 'reject', got {self.long_texts!r}")
        for name in ("max_batch_texts", "max_texts", "max_text_chars", "max_num_beams"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
