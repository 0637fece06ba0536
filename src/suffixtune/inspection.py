"""Prompt inspection: the vocabulary tokens nearest each trained prompt vector, and what is lost by using them instead."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .classifier import Classifier
from .errors import ConfigError
from .methods import METHODS
from .training.arguments import DataArguments


@dataclass
class PromptInspection:
    """Per prompt vector its nearest tokens by cosine, and the prompt's metric with those tokens in its place."""

    directory: str
    method: str
    nearest: list[list[dict[str, Any]]]  # per position: [{token, token_id, cosine, distance}, ...], best first
    nearest_prompt: str  # the top tokens, decoded as one string
    soft_metrics: dict[str, Any] = field(default_factory=dict)
    hard_metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__ | {"metric_lost": self.metric_lost}

    @property
    def metric_lost(self) -> float | None:
        """Main metric of the soft prompt minus that of the nearest-token prompt."""
        name = next((key for key in self.soft_metrics if key not in ("task", "source", "rows", "failure")), None)
        if name is None or name not in self.hard_metrics:
            return None
        return self.soft_metrics[name] - self.hard_metrics[name]


def prompt_vectors(classifier: Classifier, directory: str | os.PathLike) -> torch.Tensor:
    prompt = classifier.method.prompt_vectors()
    if prompt is None:
        methods = " or ".join(sorted(name for name, method in METHODS.items() if method.has_prompt_vectors))
        raise ConfigError(f"{directory}: method {classifier.method.name!r} has no prompt vectors to inspect; "
                          f"inspect a run of {methods}")
    return prompt


@torch.no_grad()
def nearest_tokens(classifier: Classifier, prompt: torch.Tensor, top_k: int = 5) -> list[list[dict[str, Any]]]:
    vocabulary = classifier.backbone.get_input_embeddings().weight.float()
    prompt = prompt.float().to(vocabulary.device)
    cosine = F.normalize(prompt, dim=-1) @ F.normalize(vocabulary, dim=-1).T
    best = cosine.topk(top_k, dim=-1)
    tokenizer = classifier.tokenizer
    return [
        [{"token": tokenizer.decode([token_id]), "token_id": token_id, "cosine": round(score, 4),
          "distance": round(torch.dist(vector, vocabulary[token_id]).item(), 4)}
         for token_id, score in zip(ids.tolist(), scores.tolist(), strict=True)]
        for vector, ids, scores in zip(prompt, best.indices, best.values, strict=True)
    ]


def inspect_prompt(
    directory: str | os.PathLike, data: DataArguments | None = None, top_k: int = 5, device: str | None = None,
    batch_size: int = 64, soft_metrics: dict[str, Any] | None = None, model: str | None = None,
) -> PromptInspection:
    """Nearest tokens of each prompt vector; with `data`, the task metric of the soft and of the nearest-token prompt.

    `soft_metrics`, when the soft prompt's metrics on the same data are known (a run's record), saves evaluating it.
    """
    from .generator import load_artifact
    from .training.run import evaluate_classifier

    classifier = load_artifact(directory, device=device, model=model)
    prompt = prompt_vectors(classifier, directory)
    nearest = nearest_tokens(classifier, prompt, top_k)
    top_ids = [position[0]["token_id"] for position in nearest]
    inspection = PromptInspection(str(directory), classifier.method.name, nearest, classifier.tokenizer.decode(top_ids))
    if data is not None:
        inspection.soft_metrics = soft_metrics or evaluate_classifier(classifier, data, batch_size)
        with torch.no_grad():
            embeddings = classifier.backbone.get_input_embeddings().weight
            prompt.copy_(embeddings[torch.tensor(top_ids, device=embeddings.device)].float())
        inspection.hard_metrics = evaluate_classifier(classifier, data, batch_size)
    return inspection


@torch.no_grad()
def compare_prompts(first: str | os.PathLike, second: str | os.PathLike) -> dict[str, Any]:
    """Cosine similarity between two runs' prompt vectors: position by position, and of the mean vectors."""
    prompts = []
    from .generator import load_artifact

    for directory in (first, second):
        classifier = load_artifact(directory, device="cpu")
        prompts.append(prompt_vectors(classifier, directory).float())
    a, b = prompts
    if a.shape[-1] != b.shape[-1]:
        raise ConfigError(f"{first} and {second} are prompts of models with different widths ({a.shape[-1]} vs {b.shape[-1]})")
    matrix = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    shared = min(len(a), len(b))
    return {
        "first": str(first), "second": str(second),
        "cosine": [[round(v, 4) for v in row] for row in matrix.tolist()],
        "same_position_cosine": [round(matrix[i, i].item(), 4) for i in range(shared)],
        "mean_vector_cosine": round(F.cosine_similarity(a.mean(0), b.mean(0), dim=0).item(), 4),
        "best_match_cosine": round(matrix.max(dim=1).values.mean().item(), 4),
    }
