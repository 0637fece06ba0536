"""Generation data: each source once with all of its references, splits that keep a source's references
together, E2E meaning representations as text, and multi-reference BLEU and ROUGE-L."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .data import read_table, require_columns

E2E_FIELD = r"\s*([^\[\],]+?)\s*\[([^\]]*)\]\s*"
E2E_MEANING = re.compile(rf"{E2E_FIELD}(,{E2E_FIELD})*")


@dataclass(frozen=True)
class Sources:
    """Distinct sources in file order (rows of text columns), each with every reference written for it."""

    rows: list[dict[str, str]]
    references: list[list[str]]
    file: str

    def select(self, indices: Sequence[int]) -> Sources:
        return Sources([self.rows[i] for i in indices], [self.references[i] for i in indices], self.file)


def read_sources(path: str | Path, text_columns: Sequence[str], target_column: str) -> Sources:
    """A file of (source, reference) rows as sources with their references; a source on several rows has several."""
    frame = read_table(path)
    require_columns(frame, [*text_columns, target_column], str(path))
    index: dict[tuple[str, ...], int] = {}
    rows: list[dict[str, str]] = []
    references: list[list[str]] = []
    for number, record in enumerate(frame[[*text_columns, target_column]].to_dict("records"), start=1):
        for column in [*text_columns, target_column]:
            value = record[column]
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{path}: row {number}, column {column!r} is empty; every row needs a source and a reference")
        key = tuple(record[c] for c in text_columns)
        if key not in index:
            index[key] = len(rows)
            rows.append({c: record[c] for c in text_columns})
            references.append([])
        references[index[key]].append(record[target_column])
    return Sources(rows, references, str(path))


def split_by_source(sources: Sources, held_out: float, seed: int) -> tuple[Sources, Sources]:
    """(kept, held out): a seeded random `held_out` fraction of the sources, never splitting one's references."""
    if not 0 < held_out < 1:
        raise DataError(f"the held-out fraction must be between 0 and 1, got {held_out}")
    order = np.random.default_rng(seed).permutation(len(sources.rows))
    cut = max(1, round(held_out * len(order)))
    if cut >= len(order):
        raise DataError(f"{sources.file}: {len(order)} source(s) are too few to hold out {held_out:g} of them and keep any")
    return sources.select(sorted(order[cut:])), sources.select(sorted(order[:cut]))


def render_e2e(meaning: str) -> str:
    """An E2E meaning representation as text: `name[The Eagle], food[French]` -> `name : The Eagle | food : French`."""
    if not E2E_MEANING.fullmatch(meaning):
        raise DataError(f"not an E2E meaning representation (attribute[value], ...): {meaning!r}")
    return " | ".join(f"{key} : {value}" for key, value in re.findall(E2E_FIELD, meaning))


def generation_metrics(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus BLEU (sacrebleu, all references of a source at once) and ROUGE-L (rouge-score: each hypothesis's
    best F1 over its references, averaged), both on a 0-100 scale."""
    import sacrebleu
    from rouge_score import rouge_scorer

    if len(hypotheses) != len(references) or any(not refs for refs in references):
        raise DataError(f"{len(hypotheses)} hypotheses need as many non-empty reference lists, got {len(references)}")
    most = max(len(refs) for refs in references)
    streams = [[refs[i] if i < len(refs) else None for refs in references] for i in range(most)]  # None: no i-th reference
    bleu = sacrebleu.corpus_bleu(list(hypotheses), streams).score
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rouge = np.mean([scorer.score_multi(list(refs), hyp)["rougeL"].fmeasure for hyp, refs in zip(hypotheses, references, strict=True)])
    return {"bleu": float(bleu), "rouge_l": float(100 * rouge)}
