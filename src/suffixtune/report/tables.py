"""Paper tables: rows method × prompt length, columns model or task, mean ± std over seeds, the best of each column bold."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

import pandas as pd

ROW_KEYS = ("method", "prompt_length")


@dataclass
class Cell:
    mean: float
    std: float
    runs: int

    def text(self, digits: int = 3) -> str:
        if self.runs > 1 and not math.isnan(self.std):
            return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"
        return f"{self.mean:.{digits}f}"


@dataclass
class SummaryTable:
    metric: str
    column_key: str
    rows: list[tuple[str, str]]  # (method, prompt length or "–")
    columns: list[str]
    cells: dict[tuple[tuple[str, str], str], Cell]

    def best(self, column: str) -> float | None:
        means = [cell.mean for (row, col), cell in self.cells.items() if col == column and not math.isnan(cell.mean)]
        return max(means) if means else None

    def is_best(self, row: tuple[str, str], column: str) -> bool:
        cell = self.cells.get((row, column))
        return cell is not None and cell.mean == self.best(column)

    def entries(self, bold) -> list[list[str]]:
        """Rows of rendered cells, the best per column wrapped by `bold`."""
        rendered = []
        for row in self.rows:
            values = []
            for column in self.columns:
                cell = self.cells.get((row, column))
                text = "" if cell is None else cell.text()
                values.append(bold(text) if self.is_best(row, column) else text)
            rendered.append([*row, *values])
        return rendered

    @property
    def header(self) -> list[str]:
        return ["method", "prompt length", *self.columns]

    def to_markdown(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(row) + " |" for row in self.entries(lambda text: f"**{text}**")]
        return "\n".join(lines) + "\n"

    def to_latex(self) -> str:
        spec = "ll" + "c" * len(self.columns)
        lines = [f"\\begin{{tabular}}{{{spec}}}", "\\toprule", " & ".join(map(latex_escape, self.header)) + " \\\\", "\\midrule"]
        body = self.entries(lambda text: f"\\textbf{{{text}}}")
        lines += [" & ".join(latex_escape(v) if not v.startswith("\\textbf") else v for v in row).replace("±", "$\\pm$") + " \\\\"
                  for row in body]
        lines += ["\\bottomrule", "\\end{tabular}"]
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        head = "".join(f"<th>{escape(h)}</th>" for h in self.header)
        body = "".join(
            "<tr>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>"
            for row in self.entries(lambda text: f"<strong>{escape(text)}</strong>")
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def latex_escape(text: str) -> str:
    for char, replacement in (("\\", "\\textbackslash{}"), ("_", "\\_"), ("%", "\\%"), ("&", "\\&"), ("#", "\\#")):
        text = text.replace(char, replacement)
    return text


def column_key(frame: pd.DataFrame) -> str:
    """Models as columns when the runs span several models, else tasks."""
    return "model" if frame["model"].nunique() > 1 or frame["task"].nunique() == 1 else "task"


def prompt_length_label(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else str(int(value))


def summary_table(frame: pd.DataFrame, metric: str, column: str | None = None) -> SummaryTable:
    """Mean ± std of `metric` over the runs (seeds) of each method × prompt length × column."""
    column = column or column_key(frame)
    frame = frame.assign(_row_p=frame["prompt_length"].map(prompt_length_label), _column=frame[column].map(lambda v: "–" if pd.isna(v) else str(v)))
    grouped = frame.groupby(["method", "_row_p", "_column"])[metric].agg(["mean", "std", "count"])
    cells = {((method, p), col): Cell(row["mean"], row["std"], int(row["count"])) for (method, p, col), row in grouped.iterrows()}
    methods = method_order(frame)
    rows = sorted({row for row, _ in cells}, key=lambda row: row_order(row, methods))
    columns = sorted({col for _, col in cells})
    return SummaryTable(metric, column, rows, columns, cells)


def row_order(row: tuple[str, str], methods: list[str]) -> tuple[int, int]:
    method, p = row
    return methods.index(method), int(p) if p.isdigit() else -1


def method_order(frame: pd.DataFrame) -> list[str]:
    """The frame's methods by their runs' report_order; methods without one last, by name."""
    ranks = frame.groupby("method")["report_order"].first()
    return sorted(ranks.index, key=lambda method: (math.inf if pd.isna(ranks[method]) else ranks[method], method))
