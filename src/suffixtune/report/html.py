"""index.html: every table and figure of the report in one file, figures inlined as data URIs, usable offline."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import Report

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.8em; text-align: right; }
th:first-child, td:first-child, th:nth-child(2), td:nth-child(2) { text-align: left; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; } figcaption { color: #555; font-size: 0.9em; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""

RUN_COLUMNS = ("name", "model", "task", "method", "prompt_length", "seed", "trainable_parameters",
               "train_samples_per_second", "wall_time_s", "status")


def data_uri(path) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(path.read_bytes()).decode()


def render_html(report: Report) -> str:
    from . import inspection_cells

    frame = report.runs
    parts = [f"<h1>Sweep report: {escape(', '.join(sorted(frame['study'].unique())))}</h1>",
             f"<p>{len(frame)} finished runs; metric <code>{escape(report.metric)}</code>; mean ± std over seeds, "
             f"the best of each column in bold. Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.</p>"]
    for table in report.tables:
        parts += [f"<h2>{escape(report.metric)} by method × prompt length and {escape(table.column_key)}</h2>", table.to_html()]
    for name, caption in report.figures.items():
        parts.append(f'<figure><img src="{data_uri(report.out / "figures" / f"{name}.svg")}" alt="{escape(caption)}">'
                     f"<figcaption>{escape(caption)}</figcaption></figure>")
    if report.inspections:
        header = ["run", "nearest-token prompt", "mean cosine", "soft prompt", "nearest tokens", "lost"]
        rows = [inspection_cells(item, report.metric) for item in report.inspections]
        parts += ["<h2>Prompt inspection: nearest vocabulary tokens</h2>", simple_table(header, rows)]
    if report.comparisons:
        rows = [[c["first_run"], c["second_run"], f"{c['mean_vector_cosine']:.3f}", f"{c['best_match_cosine']:.3f}"]
                for c in report.comparisons]
        parts += ["<h2>Prompt similarity between seeds</h2>",
                  simple_table(["run", "other run", "mean-vector cosine", "best-match cosine"], rows)]
    columns = [c for c in RUN_COLUMNS if c in frame] + [report.metric]
    runs = [[format_value(value) for value in row] for row in frame[columns].itertuples(index=False)]
    parts += ["<h2>Runs</h2>", simple_table(columns, runs)]
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>suffixtune report</title>'
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def simple_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def format_value(value) -> str:
    if isinstance(value, float):
        return "" if value != value else f"{value:.4g}"
    return "" if value is None else str(value)
