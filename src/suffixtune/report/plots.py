"""The report's figures, each a matplotlib Figure: one panel per model where the comparison is within a model."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .tables import method_order  # noqa: E402


def method_colors(frame: pd.DataFrame) -> dict[str, tuple[float, float, float]]:
    return dict(zip(method_order(frame), plt.get_cmap("tab10").colors, strict=False))


def panels(count: int, width: float = 4.2, height: float = 3.4) -> tuple[Figure, list]:
    figure, axes = plt.subplots(1, count, figsize=(width * count, height), squeeze=False, sharey=True, layout="constrained")
    return figure, list(axes[0])


def by_model(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    return [(str(model), group) for model, group in frame.groupby("model", sort=True)]


METRIC_NAMES = {"bleu": "BLEU", "bleu_uncased": "BLEU (uncased)", "rouge_l": "ROUGE-L", "mcc": "MCC", "f1": "F1",
                "cider": "CIDEr", "meteor": "METEOR"}


def metric_name(metric: str) -> str:
    """How papers write a metric: BLEU, ROUGE-L, MCC; others as recorded."""
    return METRIC_NAMES.get(metric, metric)


def metric_per_epoch(epochs: pd.DataFrame, metric: str) -> Figure:
    """Mean over seeds of the metric after each epoch, prompt methods only: one line per method and prompt length."""
    colors = method_colors(epochs)
    prompt_runs = epochs[epochs["prompt_length"].notna()]
    models = by_model(prompt_runs if len(prompt_runs) else epochs)
    figure, axes = panels(len(models))
    for axis, (model, group) in zip(axes, models, strict=True):
        lengths = sorted(group["prompt_length"].dropna().unique())
        for (method, length), line in group.groupby(["method", "prompt_length"], sort=True):
            curve = line.groupby("epoch")[metric].mean()
            shade = 0.35 + 0.65 * (lengths.index(length) + 1) / len(lengths)
            axis.plot(curve.index, curve.values, marker="o", color=colors.get(method), alpha=shade,
                      label=f"{method} P={int(length)}")
        axis.set(title=model, xlabel="epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    axes[0].set_ylabel(metric_name(metric))
    return figure


def best_vs_prompt_length(frame: pd.DataFrame, metric: str) -> Figure:
    """Metric (mean ± std over seeds) against prompt length; methods without a prompt as dashed lines."""
    models, colors = by_model(frame), method_colors(frame)
    figure, axes = panels(len(models))
    for axis, (model, group) in zip(axes, models, strict=True):
        prompted = group[group["prompt_length"].notna()]
        for method, runs in prompted.groupby("method"):
            stats = runs.groupby("prompt_length")[metric].agg(["mean", "std"])
            axis.errorbar(stats.index, stats["mean"], yerr=stats["std"].fillna(0), marker="o", capsize=3,
                          color=colors.get(method), label=method)
        for method, runs in group[group["prompt_length"].isna()].groupby("method"):
            axis.axhline(runs[metric].mean(), linestyle="--", color=colors.get(method), label=f"{method} (no prompt)")
        if len(prompted):
            axis.set_xscale("log", base=2)
            ticks = sorted(prompted["prompt_length"].unique())
            axis.set_xticks(ticks, [str(int(t)) for t in ticks])
        axis.set(title=model, xlabel="prompt length P")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    axes[0].set_ylabel(f"{metric_name(metric)} (mean ± std over seeds)")
    return figure


def metric_vs_parameters(frame: pd.DataFrame, metric: str) -> Figure:
    """Each configuration's mean metric against its trainable parameters, log scale; one marker shape per model."""
    figure, axis = plt.subplots(figsize=(6, 4), layout="constrained")
    colors = method_colors(frame)
    markers = dict(zip(sorted(frame["model"].astype(str).unique()), "osD^v<>", strict=False))
    keys = ["model", "method", "prompt_length"]
    stats = frame.assign(prompt_length=frame["prompt_length"].fillna(-1)).groupby(keys)
    points = stats.agg(parameters=("trainable_parameters", "mean"), value=(metric, "mean")).reset_index()
    for method, group in points.groupby("method"):
        for model, runs in group.groupby("model"):
            axis.scatter(runs["parameters"], runs["value"], color=colors.get(method), marker=markers[str(model)],
                         label=f"{method}" + (f" · {model}" if len(markers) > 1 else ""))
    axis.set_xscale("log")
    axis.set(xlabel="trainable parameters (log scale)", ylabel=metric_name(metric))
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize="small")
    return figure


def throughput_and_memory(frame: pd.DataFrame) -> Figure:
    """Training throughput and peak memory per method (mean over its runs), one bar per model and machine."""
    figure, (speed, memory) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    methods = method_order(frame)
    machines = frame["machine"].fillna("unknown machine").astype(str) if "machine" in frame else pd.Series("", frame.index)
    bars = frame["model"].astype(str) + (" · " + machines if machines.nunique() > 1 else "")
    labels = sorted(bars.unique())
    width = 0.8 / len(labels)
    for index, label in enumerate(labels):
        runs = frame[bars == label].groupby("method")
        x = np.arange(len(methods)) + index * width
        speed.bar(x, [runs["train_samples_per_second"].mean().get(m, np.nan) for m in methods], width, label=label)
        memory.bar(x, [runs["peak_memory_bytes"].mean().get(m, np.nan) / 2**30 for m in methods], width, label=label)
    for axis, label in ((speed, "training samples / s"), (memory, "peak memory (GiB)")):
        axis.set_xticks(np.arange(len(methods)) + width * (len(labels) - 1) / 2, methods, rotation=25, ha="right")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3, axis="y")
    if len(labels) > 1:
        speed.legend(fontsize="small")
    return figure
