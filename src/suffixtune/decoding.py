"""How a generator decodes: the flags of `suffixtune train` (for its evaluations), `eval` and `generate`."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ConfigError


@dataclass(frozen=True)
class Decoding:  # frozen: requests with equal settings batch together in the service
    num_beams: int = field(default=5, metadata={"help": "Generation: beam width (1: greedy decoding)."})
    max_new_tokens: int | None = field(default=None, metadata={"help": "Generation: most tokens written (default: --max_target_length)."})
    length_penalty: float = field(default=1.0, metadata={"help": "Generation: beam scores are divided by length to this power."})
    no_repeat_ngram_size: int = field(default=0, metadata={"help": "Generation: never repeat an n-gram this long (0: off)."})

    def __post_init__(self):
        if self.num_beams < 1:
            raise ConfigError(f"--num_beams must be at least 1 (1 is greedy decoding), got {self.num_beams}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError(f"--max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.no_repeat_ngram_size < 0:
            raise ConfigError(f"--no_repeat_ngram_size must be 0 (off) or more, got {self.no_repeat_ngram_size}")
