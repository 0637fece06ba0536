"""Measure the defaults a user gets: learning rate x prompt init for suffix and prefix on SST-2.

Each cell is one `suffixtune train` run (Trainer, bf16 autocast on GPU, one epoch) on a fixed train slice,
evaluated on the full SST-2 dev set. Prints a Markdown table; `--json` keeps every run record.

    python bench/defaults_sweep.py --data ../shared/data/sst2 --train-rows 8000 --bf16
"""

from __future__ import annotations

import argparse
import json
import tempfile
from itertools import product

from suffixtune.methods.soft_prompt import SoftPromptConfig
from suffixtune.training import DataArguments, MethodArguments, ModelArguments, RunFailed, TrainingArguments, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data", default="../shared/data/sst2")
    parser.add_argument("--train-rows", type=int, default=8000)
    parser.add_argument("--eval-rows", type=int, default=None)
    parser.add_argument("--prompt-length", type=int, default=20)
    parser.add_argument("--methods", default="suffix,prefix")
    parser.add_argument("--learning-rates", default="1e-3,3e-3,1e-2,3e-2")
    parser.add_argument("--inits", default="text,random")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    parser.add_argument("--json", help="Write all run records here.")
    args = parser.parse_args()

    records = []
    cells = product(args.methods.split(","), args.inits.split(","), map(float, args.learning_rates.split(",")))
    for method, init, lr in cells:
        with tempfile.TemporaryDirectory() as output:
            training = TrainingArguments(
                output_dir=output, learning_rate=lr, per_device_train_batch_size=args.batch_size, bf16=args.bf16,
                save_strategy="no", eval_strategy="no", load_best_model_at_end=False, disable_tqdm=True, seed=42,
            )
            data = DataArguments(task="sst2", data=args.data, max_train_samples=args.train_rows, max_eval_samples=args.eval_rows)
            config = SoftPromptConfig(prompt_length=args.prompt_length, prompt_init=init)
            try:
                record = train(ModelArguments(model=args.model), data, MethodArguments(method=method), config, training)
            except RunFailed:
                record = json.load(open(f"{output}/metrics.json"))
        records.append(record)
        print(json.dumps({"method": method, "init": init, "lr": lr, "status": record["status"], **record["eval"],
                          "samples_per_s": record["train_samples_per_second"]}), flush=True)

    print(f"\n{args.model}, SST-2, {args.train_rows} train rows, 1 epoch, P = {args.prompt_length}, batch {args.batch_size}, "
          f"{'bf16 autocast' if args.bf16 else 'fp32'}; dev accuracy (failed runs marked)")
    lrs = args.learning_rates.split(",")
    print("| method | init | " + " | ".join(f"lr {lr}" for lr in lrs) + " |")
    print("|---|---|" + "---|" * len(lrs))
    for index in range(0, len(records), len(lrs)):
        group = records[index : index + len(lrs)]
        cells = [f"{r['eval']['accuracy']:.3f}" + (" (failed)" if r["status"] != "ok" else "") for r in group]
        print(f"| {group[0]['method']} | {group[0]['config']['method_config']['prompt_init']} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(records, handle, indent=2, default=str)


if __name__ == "__main__":
    main()
