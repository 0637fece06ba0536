"""The text cache: with a frozen backbone a text's keys, values and pooled features never change, so keep them.

Entries are keyed by the text's token ids. After a text's first pass, later epochs and evaluations run only the
suffix. The memory store keeps entries on the backbone's device under a byte budget; the disk store writes them to
safetensors shards (each written atomically, read memory-mapped) in a directory named by everything else the
values depend on: the backbone's weights, the tokenizer, the maximum length and the dtype.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from transformers import PreTrainedModel

from .artifacts import atomic_write, cache_dir
from .backbone import kv_shape
from .text_pass import TextState, encode_texts

logger = logging.getLogger(__name__)

FORMAT = "suffixtune-text-cache-1"
MODES = ("auto", "memory", "disk", "off")
Entry = dict[str, torch.Tensor]  # "length": [1]; "hidden": [2, H] fp32 (last hidden, hidden sum); "kv": [layers * 2, kv_heads, len, head_dim]
ENTRY_PARTS = ("length", "hidden", "kv")


def row_key(token_ids: torch.Tensor) -> str:
    return hashlib.blake2b(token_ids.to(torch.int64).numpy().tobytes(), digest_size=16).hexdigest()


def entry_bytes(entry: Entry) -> int:
    return sum(t.numel() * t.element_size() for t in entry.values())


@dataclass
class CacheCost:
    """What caching a set of texts costs: bytes = tokens x layers x 2 x kv_heads x head_dim x dtype size (+ features)."""

    texts: int
    tokens: int
    bytes_per_token: int  # 0 when only pooled features are kept (methods that add no positions)
    bytes_per_text: int

    @property
    def total(self) -> int:
        return self.tokens * self.bytes_per_token + self.texts * self.bytes_per_text

    def describe(self) -> str:
        per_token = f"{self.tokens:,} tokens x {self.bytes_per_token:,} B" if self.bytes_per_token else "pooled features only"
        return f"{self.texts:,} texts, {per_token}: {format_bytes(self.total)}"


def cache_cost(backbone: PreTrainedModel, token_counts: list[int], kv_dtype: torch.dtype, with_kv: bool) -> CacheCost:
    layers, kv_heads, head_dim = kv_shape(backbone)
    per_token = layers * 2 * kv_heads * head_dim * kv_dtype.itemsize if with_kv else 0
    hidden = backbone.get_input_embeddings().embedding_dim
    return CacheCost(len(token_counts), sum(token_counts), per_token, 2 * hidden * 4)


def format_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000:
            return f"{count:.3g} {unit}"
        count /= 1000
    return f"{count:.3g} TB"


class MemoryStore:
    """Entries on the device they were computed on, up to `budget` bytes; past it, texts are recomputed."""

    def __init__(self, budget: int):
        self.budget, self.used, self.entries, self.full = budget, 0, {}, False

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def get(self, key: str) -> Entry:
        return self.entries[key]

    def put(self, key: str, entry: Entry) -> None:
        if key in self.entries:  # the same text twice in one batch
            return
        size = entry_bytes(entry)
        if self.used + size > self.budget:
            if not self.full:
                logger.warning("text cache: memory budget %s reached; further texts run their text pass each time", format_bytes(self.budget))
            self.full = True
            return
        self.entries[key], self.used = entry, self.used + size

    def flush(self) -> None:
        pass


class DiskStore:
    """Entries in safetensors shards under `directory`, each written atomically and read memory-mapped.

    A shard that cannot be read (cut short, overwritten) is deleted at open, and its texts are computed again.
    """

    def __init__(self, directory: Path, description: dict, shard_bytes: int = 256 * 2**20):
        self.directory, self.shard_bytes = Path(directory), shard_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        manifest = self.directory / "cache.json"
        if not manifest.exists():
            atomic_write(manifest, lambda path: Path(path).write_text(json.dumps(description, indent=2)))
        self.index: dict[str, tuple[Path, tuple[str, ...]]] = {}  # key -> shard, parts stored
        self.shards: dict[Path, object] = {}
        self.pending: dict[str, Entry] = {}
        self.pending_bytes = 0
        for path in sorted(self.directory.glob("shard-*.safetensors")):
            self.open_shard(path)

    def open_shard(self, path: Path) -> None:
        try:
            handle = safe_open(str(path), framework="pt")
            if (handle.metadata() or {}).get("format") != FORMAT:
                raise SafetensorError(f"not a {FORMAT} shard")
        except (SafetensorError, OSError) as error:
            logger.warning("text cache: %s is damaged (%s); deleting it, its texts will be computed again", path, error)
            path.unlink(missing_ok=True)
            return
        self.shards[path] = handle
        parts: dict[str, list[str]] = {}
        for name in handle.keys():
            key, part = name.split(".")
            parts.setdefault(key, []).append(part)
        for key, names in parts.items():
            self.index[key] = (path, tuple(names))

    def __contains__(self, key: str) -> bool:
        return key in self.pending or key in self.index

    def get(self, key: str) -> Entry:
        if key in self.pending:
            return self.pending[key]
        path, parts = self.index[key]
        return {name: self.shards[path].get_tensor(f"{key}.{name}") for name in parts}

    def put(self, key: str, entry: Entry) -> None:
        if key in self:  # the same text twice in one batch
            return
        self.pending[key] = {name: tensor.cpu() for name, tensor in entry.items()}
        self.pending_bytes += entry_bytes(entry)
        if self.pending_bytes >= self.shard_bytes:
            self.flush()

    def flush(self) -> None:
        """Write the pending entries as one new shard (atomically: readers never see half a shard)."""
        if not self.pending:
            return
        tensors = {f"{key}.{name}": tensor.contiguous() for key, entry in self.pending.items() for name, tensor in entry.items()}
        path = self.directory / f"shard-{uuid.uuid4().hex}.safetensors"
        atomic_write(path, lambda staging: save_file(tensors, staging, metadata={"format": FORMAT}))
        self.pending, self.pending_bytes = {}, 0
        self.open_shard(path)


class TextCache:
    """Per-text keys/values and pooled features, computed on a text's first pass and read on later ones."""

    def __init__(self, store: MemoryStore | DiskStore):
        self.store = store
        self.hits = self.misses = 0

    def text_state(self, backbone: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep_cache: bool) -> TextState:
        """The batch's `TextState`, assembled from cached entries; texts seen for the first time are computed and kept."""
        ids, mask = input_ids.cpu(), attention_mask.bool().cpu()
        keys = [row_key(row[m]) for row, m in zip(ids, mask, strict=True)]
        entries: list[Entry | None] = [self.store.get(k) if k in self.store else None for k in keys]
        missing = [i for i, entry in enumerate(entries) if entry is None or (keep_cache and "kv" not in entry)]
        if missing:
            index = torch.tensor(missing, device=input_ids.device)
            state = encode_texts(backbone, input_ids[index], attention_mask[index], keep_cache)
            lengths = state.lengths.tolist()
            for j, i in enumerate(missing):
                entries[i] = entry_of(state, j, lengths[j], keep_cache)
                self.store.put(keys[i], entries[i])
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        return stack_entries(entries, input_ids.device, keep_cache)

    def flush(self) -> None:
        self.store.flush()

    def summary(self) -> dict:
        """What the run record says of the cache."""
        store = "memory" if isinstance(self.store, MemoryStore) else str(self.store.directory)
        return {"store": store, "hits": self.hits, "misses": self.misses}


def read_texts(
    backbone: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep_cache: bool, cache: TextCache | None
) -> TextState:
    """The batch's text state: from `cache` where there is one, else a fresh text pass."""
    if cache is not None:
        return cache.text_state(backbone, input_ids, attention_mask, keep_cache)
    return encode_texts(backbone, input_ids, attention_mask, keep_cache)


def entry_of(state: TextState, row: int, length: int, keep_cache: bool) -> Entry:
    """One text's entry, copied out of a batch (so the batch's tensors can be freed)."""
    entry = {"length": torch.tensor([length]), "hidden": torch.stack([state.last_hidden[row].float(), state.hidden_sum[row]])}
    if keep_cache:
        layers = [t[row, :, :length] for pair in zip(state.keys, state.values, strict=True) for t in pair]
        entry["kv"] = torch.stack(layers)  # [layers * 2, kv_heads, len, head_dim]
    return entry


def stack_entries(entries: list[Entry], device: torch.device, keep_cache: bool) -> TextState:
    hidden = torch.stack([e["hidden"] for e in entries]).to(device)  # [B, 2, H]
    lengths = torch.cat([e["length"] for e in entries])  # on the CPU: reading its max waits for no GPU work
    keys, values = [], []
    if keep_cache:
        first = entries[0]["kv"]
        kv = torch.zeros(first.shape[0], len(entries), first.shape[1], int(lengths.max()), first.shape[3], dtype=first.dtype, device=device)
        for row, entry in enumerate(entries):
            kv[:, row, :, : entry["kv"].shape[2]] = entry["kv"].to(device, non_blocking=True)
        keys, values = list(kv[0::2]), list(kv[1::2])
    return TextState(keys, values, lengths.to(device), hidden[:, 0], hidden[:, 1])


def cache_directory(root: Path, description: dict) -> Path:
    """Where one backbone/tokenizer/max-length/dtype combination keeps its shards."""
    digest = hashlib.blake2b(json.dumps(description, sort_keys=True).encode(), digest_size=12).hexdigest()
    return Path(root) / digest


def free_disk_bytes(path: Path) -> int:
    path = Path(path)
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def default_memory_budget(device: torch.device) -> int:
    """A quarter of the device's memory: GPU memory on CUDA, else the machine's RAM (6 GB of a 24 GB machine)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory // 4
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


def open_text_cache(
    mode: str,
    backbone: PreTrainedModel,
    tokenizer,
    max_length: int,
    token_counts: list[int],
    kv_dtype: torch.dtype,
    *,
    with_kv: bool,
    reused: bool,
    budget: int | None = None,
    directory: str | Path | None = None,
) -> TextCache | None:
    """The run's text cache as `mode` asks (auto, memory, disk, off), after logging what it costs; None for off.

    `auto` keeps it in memory under `budget`, else on disk if it fits there, else turns it off and says why; it
    is off, too, when no text is read twice (`reused` False: one epoch, one evaluation). `with_kv`: keep keys and
    values (methods with a suffix), else only the pooled features.
    """
    from .backbone import tokenizer_fingerprint, weights_hash

    if mode not in MODES:
        raise ValueError(f"unknown text cache mode {mode!r}; choose from {list(MODES)}")
    if mode == "off":
        return None
    cost = cache_cost(backbone, token_counts, kv_dtype, with_kv)
    device = backbone.get_input_embeddings().weight.device
    budget = default_memory_budget(device) if budget is None else budget
    root = Path(directory) if directory is not None else cache_dir() / "text-cache"
    if mode == "auto":
        if not reused:
            logger.info("text cache off: every text is read once (one epoch, one evaluation); %s would be kept for nothing", cost.describe())
            return None
        if cost.total <= budget:
            mode = "memory"
        elif cost.total * 1.1 <= free_disk_bytes(root):
            mode = "disk"
        else:
            logger.warning(
                "text cache off: %s is over the memory budget %s (--text_cache_budget) and the free disk at %s",
                cost.describe(), format_bytes(budget), root,
            )
            return None
    if mode == "memory":
        logger.info("text cache in memory: %s (budget %s)", cost.describe(), format_bytes(budget))
        return TextCache(MemoryStore(budget))
    description = {
        "format": FORMAT, "base_model": backbone.name_or_path, "weights": weights_hash(backbone),
        "tokenizer": tokenizer_fingerprint(tokenizer), "max_length": max_length,
        "dtype": str(kv_dtype).removeprefix("torch."), "keys_values": with_kv,
    }
    path = cache_directory(root, description)
    logger.info("text cache on disk at %s: %s", path, cost.describe())
    return TextCache(DiskStore(path, description))
