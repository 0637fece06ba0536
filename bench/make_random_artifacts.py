"""A random-init GPT-2-size checkpoint and K suffix artifacts on it, for serving and load tests without training.

Speed does not depend on the weights, so these measure what trained artifacts of the same shapes would.

    python bench/make_random_artifacts.py --model gpt2-large --tokenizer ../shared/models/gpt2-tokenizer --output /tmp/random --tasks 3
    # then: suffixtune serve /tmp/random/task0 /tmp/random/task1 /tmp/random/task2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from train_throughput import GPT2_SIZES
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

from suffixtune import Classifier, Task, load_backbone
from suffixtune.methods.soft_prompt import SoftPromptConfig


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gpt2-large", choices=list(GPT2_SIZES))
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--prompt-length", type=int, default=20)
    args = parser.parse_args()
    output = Path(args.output)
    torch.manual_seed(0)
    tokenizer = GPT2TokenizerFast.from_pretrained(args.tokenizer)
    hidden, layers, heads = GPT2_SIZES[args.model]
    GPT2LMHeadModel(GPT2Config(n_embd=hidden, n_layer=layers, n_head=heads, vocab_size=len(tokenizer))).save_pretrained(output / "model")
    tokenizer.save_pretrained(output / "model")
    backbone, tokenizer = load_backbone(str(output / "model"))
    for k in range(args.tasks):
        task = Task(name=f"task{k}", text_columns=("text",), label_names=tuple(f"class{i}" for i in range(2 + k % 3)))
        config = SoftPromptConfig(prompt_length=args.prompt_length, prompt_init="random")
        Classifier.build(backbone, tokenizer, task, "suffix", config).save_pretrained(output / task.name)
        print(output / task.name)


if __name__ == "__main__":
    main()
