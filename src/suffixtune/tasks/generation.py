"""Generation data: each source once with all of its references, splits that keep a source's references
together, training pairs as token ids, and multi-reference BLEU and ROUGE-L."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from ..errors import DataError
from . import Task
from .data import encode_rows, find_split_file, read_table, require_columns


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


def generation_metrics(hypotheses: Sequence[str], references: Sequence[Sequence[str]], official: bool = True) -> dict[str, float]:
    """Corpus BLEU (sacrebleu, all references of a source at once) and ROUGE-L (rouge-score: each hypothesis's
    best F1 over its references, averaged), both 0-100; with `official` (and `suffixtune[e2e]` installed), NIST,
    CIDEr and METEOR as `official_e2e_metrics` computes them."""
    import sacrebleu
    from rouge_score import rouge_scorer

    if len(hypotheses) != len(references) or any(not refs for refs in references):
        raise DataError(f"{len(hypotheses)} hypotheses need as many non-empty reference lists, got {len(references)}")
    bleu = sacrebleu.corpus_bleu(list(hypotheses), reference_streams(references)).score
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rouge = np.mean([scorer.score_multi(list(refs), hyp)["rougeL"].fmeasure for hyp, refs in zip(hypotheses, references, strict=True)])
    extra = official_e2e_metrics(hypotheses, references) if official else {}
    return {"bleu": float(bleu), "rouge_l": float(100 * rouge), **extra}


def reference_streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """sacrebleu's layout: the i-th reference of every source, None where a source has fewer."""
    most = max(len(refs) for refs in references)
    return [[refs[i] if i < len(refs) else None for refs in references] for i in range(most)]


def official_e2e_metrics(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """What the official E2E script reports, as near as libraries here compute it, on lowercased 13a-tokenized text
    (the script tokenizes with its own PTB and mteval tokenizers, so values can differ slightly):

    `bleu_uncased` (sacrebleu; the script's BLEU is case-insensitive), and with `suffixtune[e2e]` installed the
    MS-COCO caption code the script calls: `rouge_l_coco` (best precision and best recall over the references,
    beta 1.2; `rouge_l` is rouge-score's best-F1 reference), `cider` and `meteor` (METEOR 1.5, when Java is here);
    and `nist_nltk`, NLTK's NIST (n = 5), which scores each n-gram order against its best single reference, not
    against all of them as the script's mteval does: a different number once an MR has several references.
    """
    import sacrebleu
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    metrics = {"bleu_uncased": float(sacrebleu.corpus_bleu(list(hypotheses), reference_streams(references), lowercase=True).score)}
    tokenize = Tokenizer13a()
    hyps = [tokenize(" ".join(h.split())).lower() for h in hypotheses]
    refs = [[tokenize(" ".join(r.split())).lower() for r in rs] for rs in references]
    try:
        from nltk.translate.nist_score import corpus_nist
    except ImportError:
        pass
    else:
        longest = max(len(h.split()) for h in hyps)  # orders no hypothesis reaches add 0, as in mteval (NLTK divides by 0)
        metrics["nist_nltk"] = float(corpus_nist([[r.split() for r in rs] for rs in refs], [h.split() for h in hyps], n=min(5, longest))) if longest else 0.0
    try:
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.meteor.meteor import Meteor
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError:
        return metrics
    truths, written = dict(enumerate(refs)), {i: [h] for i, h in enumerate(hyps)}
    metrics["rouge_l_coco"] = float(100 * Rouge().compute_score(truths, written)[0])
    metrics["cider"] = float(Cider().compute_score(truths, written)[0])
    if shutil.which("java"):
        metrics["meteor"] = float(100 * Meteor().compute_score(truths, written)[0])
    return metrics


HELD_OUT_SEED = 0  # the validation slice of a task's train file is the same for every run


def load_sources(task: Task, split: str, *, data_dir: str | Path | None = None, file: str | Path | None = None) -> Sources:
    """One split of a generation task: from `file`, or the task's file in `data_dir`, where a task with `held_out`
    and no validation file takes its validation sources from the train file (and trains on the rest)."""
    carved = file is None and task.held_out is not None and split in ("train", "validation") and "validation" not in task.files
    if file is None:
        if data_dir is None:
            raise DataError(f"task {task.name!r} reads local files: pass --data DIR, or --{split} FILE")
        file = find_split_file(task, "train" if carved else split, data_dir)
    sources = read_sources(file, task.text_columns, task.target_column)
    if not carved:
        return sources
    kept, held = split_by_source(sources, task.held_out, HELD_OUT_SEED)
    return kept if split == "train" else held


def target_ids(tokenizer: PreTrainedTokenizerBase, target: str) -> list[int]:
    """A target as the model learns to write it after its source: a space, the text, then the end-of-text token."""
    return tokenizer(" " + target.strip(), add_special_tokens=False).input_ids + [tokenizer.eos_token_id]


def tokenize_pairs(task: Task, sources: Sources, tokenizer: PreTrainedTokenizerBase, max_source_length: int,
                   max_target_length: int) -> Dataset:
    """One training example per (source, reference): source ids cut to `max_source_length` (in its text, never the
    template), target ids cut to `max_target_length` (the end-of-text token stays last)."""
    source_ids, _ = encode_rows(task, sources.rows, tokenizer, max_source_length)
    inputs, labels = [], []
    for ids, references in zip(source_ids, sources.references, strict=True):
        for reference in references:
            target = target_ids(tokenizer, reference)
            inputs.append(ids)
            labels.append(target[: max_target_length - 1] + target[-1:] if len(target) > max_target_length else target)
    return Dataset.from_dict({"input_ids": inputs, "labels": labels, "length": [len(a) + len(b) for a, b in zip(inputs, labels, strict=True)]})
