"""Lists the places where a suffix training step makes the CPU wait for the GPU (CUDA only).

    python bench/sync_check.py [--model gpt2] [--cached]
"""

from __future__ import annotations

import argparse
import collections
import warnings

import torch
from train_throughput import TASK, batches, load_model

from suffixtune import Classifier
from suffixtune.methods.soft_prompt import SoftPromptConfig
from suffixtune.text_cache import MemoryStore, TextCache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gpt2")
    parser.add_argument("--tokenizer", default="../shared/models/gpt2-tokenizer")
    parser.add_argument("--data", default="../shared/data/sst2/train.tsv")
    parser.add_argument("--cached", action="store_true")
    args = parser.parse_args()
    args.random_init, args.device, args.batch_size, args.steps, args.max_tokens, args.synthetic_length = True, "cuda", 8, 3, 64, None
    backbone, tokenizer = load_model(args)
    classifier = Classifier.build(backbone, tokenizer, TASK, "suffix", SoftPromptConfig(prompt_length=20)).train()
    if args.cached:
        classifier.text_cache = TextCache(MemoryStore(2**40))
    data = list(batches(args, tokenizer))
    classifier(*data[0]).loss.backward()  # first sight of everything
    places = collections.Counter()
    torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for ids, mask, labels in data[1:]:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = classifier(ids, mask, labels).loss
            loss.backward()
    torch.cuda.set_sync_debug_mode(0)
    for warning in caught:
        if "synchroniz" in str(warning.message):
            places[f"{warning.filename}:{warning.lineno}"] += 1
    print(f"synchronising calls in {len(data) - 1} steps ({'cached' if args.cached else 'frozen text'}):")
    for place, count in places.most_common():
        print(f"  {count} x {place}")


if __name__ == "__main__":
    main()
