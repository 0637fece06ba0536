"""`suffixtune report`: tables, figures, prompt inspection and one self-contained HTML page from a sweep's stored runs."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .. import results
from ..artifacts import atomic_write
from ..errors import ConfigError
from . import plots
from .html import render_html
from .tables import SummaryTable, summary_table

logger = logging.getLogger(__name__)

FIGURES = {
    "metric_per_epoch": "{metric} after each epoch (mean over seeds): prompt methods, one panel per model",
    "best_vs_prompt_length": "Best {metric} against prompt length, per model and method (mean ± std over seeds)",
    "metric_vs_parameters": "{metric} against trainable parameters (log scale)",
    "throughput_and_memory": "Training throughput and peak memory per method, apart for each model and machine",
}


@dataclass
class Report:
    out: Path
    metric: str
    runs: pd.DataFrame
    tables: list[SummaryTable]
    figures: dict[str, str]  # name: caption, each saved as NAME.png and NAME.svg
    searched_runs: int | None = None  # with a search: the runs the best of each cell was chosen from
    inspections: list[dict[str, Any]] = field(default_factory=list)
    comparisons: list[dict[str, Any]] = field(default_factory=list)


def build_report(
    storage: str | os.PathLike, out: str | os.PathLike, study: str | None = None, metric: str | None = None,
    inspect: bool = True, evaluate_nearest_tokens: bool = True,
) -> Report:
    """Write tables (Markdown, LaTeX), figures (PNG, SVG), runs.csv, report.md and a self-contained index.html."""
    frame = results.load(storage, study)
    if frame.empty:
        raise ConfigError(f"{storage}: no finished runs to report on yet")
    metric = metric or main_metric(frame)
    if metric not in frame:
        raise ConfigError(f"metric {metric!r} is not in the runs' records; they have {sorted(metric_columns(frame))}")
    searched = len(frame)
    frame = results.best_per_cell(frame, metric)
    searched = searched if searched > len(frame) else None
    epochs = pd.DataFrame([row for study_name, record in zip(frame["study"], frame["record"], strict=True)
                           for row in results.epoch_rows(study_name, record)])
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    tables = [summary_table(frame, metric)]
    if "task" != tables[0].column_key and frame["task"].nunique() > 1:
        tables.append(summary_table(frame, metric, "task"))
    figures = {
        "best_vs_prompt_length": plots.best_vs_prompt_length(frame, metric),
        "metric_vs_parameters": plots.metric_vs_parameters(frame, metric),
        "throughput_and_memory": plots.throughput_and_memory(frame),
    }
    if metric in epochs:  # runs evaluated only after training (eval_strategy "no") have no per-epoch points
        figures = {"metric_per_epoch": plots.metric_per_epoch(epochs, metric)} | figures
    for name, figure in figures.items():
        for suffix in ("png", "svg"):
            atomic_write(out / "figures" / f"{name}.{suffix}", lambda path, f=figure, s=suffix: f.savefig(path, format=s, dpi=150))
        plots.plt.close(figure)
    report = Report(out, metric, frame, tables, {name: sentence(FIGURES[name].format(metric=plots.metric_name(metric))) for name in figures}, searched_runs=searched)
    if inspect:
        report.inspections, report.comparisons = inspect_best_prompts(frame, metric, evaluate_nearest_tokens)
    write_text(out / "tables.md", "\n".join(f"### {table.metric} by {table.column_key}\n\n{table.to_markdown()}" for table in tables))
    write_text(out / "tables.tex", "\n".join(table.to_latex() for table in tables))
    results.export(frame.drop(columns=["record", "versions"]), out / "runs.csv")
    write_text(out / "report.md", render_markdown(report))
    write_text(out / "index.html", render_html(report))
    return report


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda staging: Path(staging).write_text(text))


def sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def metric_columns(frame: pd.DataFrame) -> set[str]:
    return {m for record in frame["record"] for m in record["eval"]} - {"loss", "runtime", "samples_per_second", "steps_per_second"}


def main_metric(frame: pd.DataFrame) -> str:
    """The tasks' first metric (the one the runs selected their best checkpoint by)."""
    names = {record["config"]["training"]["metric_for_best_model"] for record in frame["record"]}
    if len(names) > 1:
        raise ConfigError(f"the runs' tasks use different main metrics {sorted(names)}; pass --metric")
    return names.pop().removeprefix("eval_")


def inspect_best_prompts(frame: pd.DataFrame, metric: str, evaluate: bool) -> tuple[list[dict], list[dict]]:
    """Nearest tokens of the best run per model, task and prompt-vector method; seed-to-seed similarity of its setting."""
    from ..inspection import compare_prompts, inspect_prompt
    from ..training.arguments import DataArguments

    inspections, comparisons = [], []
    prompted = frame[frame["has_prompt_vectors"] & (frame["status"] == "ok")]
    for _, group in prompted.groupby(["model", "task", "method"]):
        best = group.loc[group[metric].idxmax()]
        if not Path(best["directory"], "suffixtune_config.json").is_file():
            logger.warning("run %s: artifact %s is not here; not inspected", best["run_id"], best["directory"])
            continue
        data_config = best["record"]["config"]["data"]
        data = DataArguments(data=data_config.get("data"), validation=data_config.get("validation"),
                             max_eval_samples=data_config.get("max_eval_samples")) if evaluate else None
        evaluated = {key.removeprefix("eval_"): value for key, value in best["record"]["eval"].items()}
        inspection = inspect_prompt(best["directory"], data, top_k=3, soft_metrics=evaluated).to_dict()
        inspections.append({"run": best["name"], "model": best["model"], "task": best["task"], **inspection})
        siblings = group[(group["prompt_length"] == best["prompt_length"]) & (group["run_id"] != best["run_id"])]
        for _, other in siblings.iterrows():
            if Path(other["directory"], "suffixtune_config.json").is_file():
                comparison = compare_prompts(best["directory"], other["directory"])
                comparisons.append({"first_run": best["name"], "second_run": other["name"], **comparison})
    return inspections, comparisons


def render_markdown(report: Report) -> str:
    frame = report.runs
    lines = [f"# Sweep report: {', '.join(sorted(frame['study'].unique()))}", "",
             f"{len(frame)} finished runs; metric: {report.metric} on each task's evaluation split "
             f"({int(frame['eval_rows'].max())} rows at most). Mean ± std over seeds; the best of each column is bold.", ""]
    if report.searched_runs:
        lines += [f"Each grid cell's searched settings: its best of {report.searched_runs} runs in all, chosen by "
                  f"{report.metric} on the evaluation split (an optimistic, selected-on-dev figure).", ""]
    for table in report.tables:
        lines += [f"## {report.metric} by method × prompt length and {table.column_key}", "", table.to_markdown()]
    for name, caption in report.figures.items():
        lines += [f"## {caption}", "", f"![{caption}](figures/{name}.png)", f"([SVG](figures/{name}.svg))", ""]
    if report.inspections:
        lines += ["## Prompt inspection: nearest vocabulary tokens", "",
                  "| run | nearest-token prompt | mean cosine to nearest token | soft prompt | nearest tokens | lost |",
                  "|---|---|---|---|---|---|"]
        for item in report.inspections:
            cells = inspection_cells(item, report.metric)
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
        lines.append("")
    if report.comparisons:
        lines += ["## Prompt similarity between seeds", "", "| run | other run | mean-vector cosine | best-match cosine |",
                  "|---|---|---|---|"]
        lines += [f"| {c['first_run']} | {c['second_run']} | {c['mean_vector_cosine']:.3f} | {c['best_match_cosine']:.3f} |"
                  for c in report.comparisons]
        lines.append("")
    return "\n".join(lines)


def inspection_cells(item: dict[str, Any], metric: str) -> list[str]:
    cosine = sum(position[0]["cosine"] for position in item["nearest"]) / len(item["nearest"])
    soft, hard = item["soft_metrics"].get(metric), item["hard_metrics"].get(metric)
    cells = [item["run"], repr(item["nearest_prompt"]), f"{cosine:.3f}",
             "" if soft is None else f"{soft:.3f}", "" if hard is None else f"{hard:.3f}",
             "" if item["metric_lost"] is None else f"{item['metric_lost']:+.3f}"]
    return cells
