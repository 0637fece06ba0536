"""Test-set scores of a generation sweep's artifacts on E2E, with five descriptions per run beside their references.

Every run directory under RUNS/runs holding a generation artifact decodes the same fixed random subset of the
test MRs (seed 0) with beam search; BLEU and ROUGE-L, and NIST, CIDEr and METEOR where `suffixtune[e2e]` and Java
are installed, score each MR against all of its references. `--zero-shot` adds the untrained model: a suffix
artifact whose prompt is still the task's instruction text (nothing trained).

    python bench/e2e_test_scores.py runs/e2e-study --data ../shared/data/e2e --max-eval-samples 100 --zero-shot

A run trained with --reparam is labelled with it and its learning rate; `--runs-matching` scores only the run
directories whose names match one of its globs (a diverged run decodes to the token limit at every beam, for minutes).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import time
from pathlib import Path

from suffixtune import Decoding, Generator, get_task, load_backbone
from suffixtune.artifacts import CONFIG_NAME, read_config
from suffixtune.tasks.generation import generation_metrics, load_sources
from suffixtune.training.generation import sample_sources

SAMPLES = 5
METRICS = ("bleu", "bleu_uncased", "rouge_l", "rouge_l_coco", "nist_nltk", "cider", "meteor")


def score(generator: Generator, sources, decoding: Decoding, batch_size: int) -> tuple[dict, list[str], float]:
    started = time.perf_counter()
    written = generator.generate(sources.rows, decoding, batch_size)
    return generation_metrics(written, sources.references), written, time.perf_counter() - started


def matches(name: str, globs: list[str]) -> bool:
    return any(fnmatch.fnmatch(name, glob) for glob in globs)


def method_label(record: dict) -> str:
    """The method, with `--reparam` and the learning rate where the run trained through the MLP."""
    if not record["config"]["method_config"].get("reparam"):
        return record["method"]
    return f"{record['method']} --reparam (lr {record['config']['training']['learning_rate']:g})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", help="A sweep's output directory (its runs/ hold the run directories).")
    parser.add_argument("--data", required=True, help="Directory with E2E's testset_w_refs.csv.")
    parser.add_argument("--max-eval-samples", type=int, default=100)
    parser.add_argument("--num-beams", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--zero-shot", action="store_true")
    parser.add_argument("--runs-matching", nargs="+", default=["*"], metavar="GLOB",
                        help="Score only the run directories whose names match one of these globs.")
    parser.add_argument("--out", help="Write the rows as JSON lines here too.")
    options = parser.parse_args()
    task = get_task("e2e")
    sources = sample_sources(load_sources(task, "test", data_dir=options.data), options.max_eval_samples)
    decoding = Decoding(num_beams=options.num_beams)
    rows = []
    if options.zero_shot:
        backbone, tokenizer = load_backbone("smollm2-135m")
        generator = Generator.build(backbone, tokenizer, task, "suffix")
        metrics, written, seconds = score(generator, sources, decoding, options.batch_size)
        rows.append({"run": "zero-shot (untrained suffix: the instruction's 20 tokens)", "method": "zero-shot", "prompt_length": None,
                     "validation_bleu": None, "train_runtime_s": 0, **metrics, "decode_s": seconds, "written": written})
    runs = Path(options.runs, "runs").iterdir()
    for directory in sorted(p for p in runs if (p / CONFIG_NAME).is_file() and matches(p.name, options.runs_matching)):
        if read_config(directory).task_kind != "generation":
            continue
        record = json.loads((directory / "metrics.json").read_text())
        generator = Generator.from_pretrained(directory)
        metrics, written, seconds = score(generator, sources, decoding, options.batch_size)
        rows.append({"run": directory.name, "method": method_label(record), "prompt_length": record["prompt_length"],
                     "seed": record["seed"], "validation_bleu": record["eval"]["bleu"], "train_runtime_s": record["train_runtime_s"],
                     **metrics, "decode_s": seconds, "written": written})
    shown = [m for m in METRICS if all(m in row for row in rows)]
    print(f"test: {len(sources.rows)} MRs of {sources.file} (fixed random subset, seed 0), beam {options.num_beams}")
    print("| method | P | " + " | ".join(shown) + " | validation BLEU | training s | decoding s |")
    print("|---|---|" + "---|" * (len(shown) + 3))
    for row in rows:
        values = " | ".join(f"{row[m]:.2f}" for m in shown)
        valid = "–" if row["validation_bleu"] is None else f"{row['validation_bleu']:.2f}"
        print(f"| {row['method']} | {row['prompt_length'] or '–'} | {values} | {valid} | {row['train_runtime_s']:.0f} | {row['decode_s']:.0f} |")
    for index in range(min(SAMPLES, len(sources.rows))):
        print(f"\n**{sources.rows[index]['mr']}**\n\n- reference: {sources.references[index][0]}")
        for row in rows:
            label = row["method"] + (f" P={row['prompt_length']}" if row["prompt_length"] else "")
            print(f"- {label}: {row['written'][index]}")
    if options.out:
        Path(options.out).write_text("".join(json.dumps(row) + "\n" for row in rows))


if __name__ == "__main__":
    main()
