"""What the linear head reads: the geometry of pooled features at initialisation, raw and standardised.

Builds the default suffix classifier (initial prompt), pools N training texts, and prints the numbers that
explain an ill-conditioned head: the feature norm, the largest per-dimension mean (shared by every text) against
that dimension's spread across texts, and the mean cosine similarity between two texts' features.

    python bench/feature_geometry.py --task sst2 --data ../shared/data/sst2 --rows 256
"""

from __future__ import annotations

import argparse
import json

import torch

from suffixtune.backbone import load_backbone
from suffixtune.classifier import Classifier
from suffixtune.methods.soft_prompt import SoftPromptConfig
from suffixtune.tasks import get_task
from suffixtune.tasks.data import load_split
from suffixtune.training.run import subsample


def geometry(features: torch.Tensor) -> dict[str, float]:
    mean, std = features.mean(0), features.std(0)
    top = int(mean.abs().argmax())
    unit = torch.nn.functional.normalize(features, dim=-1)
    cosine = unit @ unit.T
    off_diagonal = cosine[~torch.eye(len(features), dtype=torch.bool)]
    return {
        "norm": round(float(features.norm(dim=-1).mean()), 2),
        "largest_mean_dimension": top,
        "its_mean": round(float(mean[top]), 2),
        "its_std_across_texts": round(float(std[top]), 3),
        "share_of_squared_norm_in_it": round(float((features[:, top] ** 2).sum() / (features**2).sum()), 3),
        "mean_cosine_between_texts": round(float(off_diagonal.mean()), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--data", default="../shared/data/sst2")
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--prompt-length", type=int, default=10)
    args = parser.parse_args()

    task = get_task(args.task)
    texts = subsample(load_split(task, "train", data_dir=args.data), args.rows, seed=0).texts
    backbone, tokenizer = load_backbone(args.model)
    for method in ("suffix", "head"):
        config = SoftPromptConfig(prompt_length=args.prompt_length) if method == "suffix" else None
        classifier = Classifier.build(backbone, tokenizer, task, method, config, max_length=128).eval()
        token_ids = tokenizer(texts, truncation=True, max_length=128).input_ids
        with torch.no_grad():
            batch = tokenizer.pad({"input_ids": token_ids}, return_tensors="pt")
            features = torch.cat([classifier.pooled_features(batch["input_ids"][i : i + 64], batch["attention_mask"][i : i + 64])
                                  for i in range(0, len(texts), 64)])
        standardised = (features - features.mean(0)) / features.std(0)
        print(json.dumps({"method": method, "raw": geometry(features), "standardised": geometry(standardised)}))


if __name__ == "__main__":
    main()
