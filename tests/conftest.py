"""Tiny random GPT-2 and Llama backbones with the real GPT-2 tokenizer; nothing touches the network."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers reads it: tests never touch the network
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast, LlamaConfig, LlamaForCausalLM

from suffixtune.backbone import prepare_backbone
from suffixtune.tasks import Task

pytest_plugins = ["ci_skips"]

SHARED = Path(os.environ.get("SUFFIXTUNE_SHARED", Path(__file__).resolve().parents[2] / "shared"))  # mutmut runs from a copy
TOKENIZER_DIR = Path(os.environ.get("SUFFIXTUNE_TEST_TOKENIZER", SHARED / "models" / "gpt2-tokenizer"))
DATA_DIR = SHARED / "data"

TINY_CONFIGS = {
    "gpt2": lambda vocab: GPT2LMHeadModel(
        GPT2Config(vocab_size=vocab, n_positions=128, n_embd=32, n_layer=2, n_head=2, initializer_range=0.2, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    ),
    "llama": lambda vocab: LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.2,
        )
    ),
}


@pytest.fixture(scope="session")
def tokenizer_dir() -> Path:
    if not (TOKENIZER_DIR / "vocab.json").is_file():
        pytest.fail(f"GPT-2 tokenizer not found at {TOKENIZER_DIR}; the tests need ../shared beside the checkout")
    return TOKENIZER_DIR


def make_backbone(kind: str, tokenizer_dir: Path, padding_side: str = "right", seed: int = 0):
    torch.manual_seed(seed)
    tokenizer = GPT2TokenizerFast.from_pretrained(tokenizer_dir)
    tokenizer.padding_side = padding_side
    model = TINY_CONFIGS[kind](len(tokenizer))
    model.name_or_path = f"tiny-{kind}-seed{seed}"
    prepare_backbone(model, tokenizer)
    return model, tokenizer


@pytest.fixture(params=["gpt2", "llama"])
def backbone(request, tokenizer_dir):
    return make_backbone(request.param, tokenizer_dir)


def toy_task(num_labels: int = 2) -> Task:
    names = None if num_labels == 1 else tuple(f"class{i}" for i in range(num_labels))
    words = None if num_labels == 1 else tuple(f" {w}" for w in ["red", "green", "blue", "cat", "dog", "sun"][:num_labels])
    return Task(name=f"toy{num_labels}", text_columns=("text",), label_names=names, label_words=words, prompt_text=" Answer:")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """A tiny random GPT-2 saved like a hub checkpoint, so the CLI and load_backbone load it by path."""
    directory = tmp_path_factory.mktemp("tiny-gpt2")
    model, tokenizer = make_backbone("gpt2", tokenizer_dir)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def write_toy_csv(path: Path, rows: int = 64, seed: int = 0) -> Path:
    """Separable sentiment-like rows: the label is which of two word groups the text uses."""
    import random

    rng = random.Random(seed)
    good, bad = ["great", "wonderful", "superb", "lovely"], ["awful", "terrible", "boring", "dreadful"]
    lines = ["text,label"]
    for i in range(rows):
        label = i % 2
        words = rng.choices(good if label else bad, k=rng.randint(2, 6))
        lines.append(f"{' '.join(words)},{'positive' if label else 'negative'}")
    path.write_text("\n".join(lines) + "\n")
    return path
