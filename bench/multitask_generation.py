"""Sources/s writing every E2E source for K suffix generation tasks: one shared pass per source vs each task alone.

(a) `shared`: `MultiTaskGenerator.generate`, the sources' keys and values computed once, then one `generate` call
    for every task's prompt and beams against them.
(b) `separate`: each task's `Generator.generate` in turn (what any prompt method costs: K passes over each source).
Both write the same text (checked and reported). The source pass is the part shared, so the gain grows with the
source's length against the prompt and what is written; E2E sources are short and beams write ~25 tokens each.

    python bench/multitask_generation.py --artifacts runs/e2e/suffix-1 runs/e2e/suffix-5 runs/e2e/suffix-10 --data ../shared/data/e2e
    python bench/multitask_generation.py --model smollm2-135m --tasks 4 --prompt-length 10 --data ../shared/data/e2e
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date

import torch

from suffixtune import Decoding, Generator, get_task, load_backbone
from suffixtune.methods.soft_prompt import SoftPromptConfig
from suffixtune.multitask import MultiTaskGenerator
from suffixtune.tasks.generation import load_sources


def random_generators(options: argparse.Namespace) -> MultiTaskGenerator:
    """K suffix tasks with prompts from random vocabulary, standing in for trained ones (same shapes, same cost)."""
    backbone, tokenizer = load_backbone(options.model)
    built = {}
    for k in range(options.tasks):
        torch.manual_seed(k)
        config = SoftPromptConfig(prompt_length=options.prompt_length, prompt_init="random")
        built[f"task{k}"] = Generator.build(backbone, tokenizer, get_task("e2e"), "suffix", config,
                                            max_target_length=options.max_new_tokens).eval()
    return MultiTaskGenerator(backbone, tokenizer, built)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifacts", nargs="*", help="Suffix generation artifacts of one base model.")
    parser.add_argument("--model", default="smollm2-135m", help="Without --artifacts: random suffix tasks on this model.")
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--prompt-length", type=int, default=10)
    parser.add_argument("--data", required=True, help="The E2E folder (testset_w_refs.csv).")
    parser.add_argument("--sources", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-beams", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    artifacts = {f"task{k}": directory for k, directory in enumerate(options.artifacts or [])}
    together = MultiTaskGenerator.from_pretrained(artifacts) if artifacts else random_generators(options)
    sources = load_sources(get_task("e2e"), "test", data_dir=options.data)
    rows = sources.rows[: options.sources]
    decoding = Decoding(num_beams=options.num_beams, max_new_tokens=options.max_new_tokens)
    together.generate(rows[:2], decoding=decoding)  # warm-up, both paths
    for generator in together.classifiers.values():
        generator.generate(rows[:2], decoding)

    started = time.perf_counter()
    shared = together.generate(rows, decoding=decoding, batch_size=options.batch_size)
    shared_s = time.perf_counter() - started
    started = time.perf_counter()
    separate = {name: g.generate(rows, decoding, options.batch_size) for name, g in together.classifiers.items()}
    separate_s = time.perf_counter() - started
    same = sum(row[name] == separate[name][i] for i, row in enumerate(shared) for name in separate)
    print(json.dumps({
        "tasks": {name: info.prompt_length for name, info in together.tasks.items()}, "sources": len(rows),
        "num_beams": options.num_beams, "max_new_tokens": options.max_new_tokens, "batch_size": options.batch_size,
        "shared_sources_per_second": round(len(rows) / shared_s, 2), "separate_sources_per_second": round(len(rows) / separate_s, 2),
        "speedup": round(separate_s / shared_s, 3), "same_text": f"{same}/{len(rows) * len(separate)}",
        "machine": f"{platform.processor() or platform.machine()}, {options.threads} threads, torch {torch.__version__}",
        "date": date.today().isoformat(),
    }, indent=1))


if __name__ == "__main__":
    main()
