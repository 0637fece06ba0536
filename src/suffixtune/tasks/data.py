"""Read, validate and tokenize task data; every error names the file, row and column, and says what would work."""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from ..errors import DataError
from . import Task

logger = logging.getLogger(__name__)

READERS = {".tsv", ".csv", ".parquet", ".jsonl", ".json"}


Row = str | Mapping[str, str]


@dataclass
class Split:
    rows: list[dict[str, str]]  # the task's text columns, per row
    labels: list[int] | list[float]
    source: str
    task: Task

    @property
    def texts(self) -> list[str]:
        return [self.task.format(row) for row in self.rows]

    def select(self, indices: Sequence[int]) -> Split:
        return replace(self, rows=[self.rows[i] for i in indices], labels=[self.labels[i] for i in indices])


def read_table(path: str | Path, headerless_columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """A file as a DataFrame; delimited files are read with every cell as text and no quote handling for TSV."""
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir():
        raise DataError(f"{path}: is a directory; give a file ({', '.join(sorted(READERS))}), or the directory as --data")
    if suffix not in READERS:
        raise DataError(f"{path}: unsupported file type {suffix!r}; use one of {sorted(READERS)}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    try:
        frame = read_frame(path, suffix, headerless_columns)
    except UnicodeDecodeError:
        raise DataError(f"{path}: {not_utf8(path.read_bytes())}; convert the file, e.g. "
                        f"`iconv -f latin1 -t utf-8 {path.name} > {path.stem}.utf8{path.suffix}`") from None
    except pd.errors.ParserError as error:
        raise DataError(f"{path}: {str(error).strip()}; quote cells that hold the delimiter, or use a .tsv") from None
    if len(frame) == 0:
        raise DataError(f"{path}: file has a header but no rows")
    return frame


def not_utf8(data: bytes) -> str:
    """Where `data` stops being UTF-8, as a reader can find it."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        return f"line {line} is not UTF-8 (byte 0x{data[error.start]:02x} at offset {error.start})"
    return "not UTF-8"


def read_frame(path: Path, suffix: str, headerless_columns: tuple[str, ...] | None) -> pd.DataFrame:
    if suffix in (".tsv", ".csv"):
        options = dict(sep="\t", quoting=csv.QUOTE_NONE) if suffix == ".tsv" else dict(sep=",")
        if headerless_columns:
            with open(path, encoding="utf-8-sig") as handle:
                first = handle.readline().rstrip("\n").split(options["sep"])
            if not set(first) & set(headerless_columns):
                options.update(header=None, names=list(headerless_columns))
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig", **options)
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix == ".jsonl":
        return pd.DataFrame(read_jsonl_records(path))
    try:
        return pd.read_json(path, dtype=False)
    except ValueError as error:
        raise DataError(f"{path}: not a JSON table ({error}); give a list of objects, or JSON lines as .jsonl") from None


def read_jsonl_records(path: Path) -> list[dict]:
    """One JSON object per line (a byte-order mark and blank lines are fine); a bad line is named."""
    with open(path, "rb") as handle:
        records = []
        for number, record in json_lines(handle, str(path)):
            if not isinstance(record, dict):
                raise DataError(f"{path}: line {number} is a {type(record).__name__}; each line must be an object of columns")
            for column, value in record.items():
                if isinstance(value, str) and (problem := not_unicode(value)):
                    raise DataError(f"{path} line {number}, column {column!r}: {problem}")
            records.append(record)
        return records


def json_lines(lines: Iterable[bytes | str], source: str) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each non-blank line of JSON lines; a line that is not UTF-8 or not JSON is named."""
    for number, raw in enumerate(lines, start=1):
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError as error:
            raise DataError(f"{source} line {number}: not UTF-8 (byte 0x{raw[error.start]:02x} at column {error.start + 1})") from None
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{source} line {number}: not JSON ({error.msg} at column {error.colno})") from None


def find_split_file(task: Task, split: str, data_dir: str | Path) -> Path:
    data_dir = Path(data_dir)
    candidates = task.files.get(split, ())
    if not candidates:
        raise DataError(f"task {task.name!r} reads user files, so {data_dir} has no {split} split to look up for it; "
                        f"give the file itself (eval: --validation FILE)")
    for name in candidates:
        if (data_dir / name).is_file():
            return data_dir / name
    raise DataError(
        f"{data_dir}: no {split} file for task {task.name!r}; expected one of {list(candidates)}"
        + (f", found {sorted(p.name for p in data_dir.iterdir())}" if data_dir.is_dir() else " (no such directory)")
    )


def load_split(task: Task, split: str, *, data_dir: str | Path | None = None, file: str | Path | None = None) -> Split:
    """Rows of one split from an explicit file, a GLUE-style directory, or (with neither) the Hugging Face hub."""
    if file is None and data_dir is not None:
        file = find_split_file(task, split, data_dir)
    if file is not None:
        frame = read_table(file, task.headerless_columns)
        source = str(file)
    elif task.hub is not None:
        from datasets import load_dataset

        hub_split = "validation_matched" if (task.name, split) == ("mnli", "validation") else split
        try:
            frame = load_dataset(*task.hub, split=hub_split).to_pandas()
        except ConnectionError as error:
            raise DataError(
                f"task {task.name!r}: the Hugging Face hub could not provide {'/'.join(task.hub)} ({error}); "
                f"pass --data DIR with the task's files (e.g. its GLUE directory), or --{split} FILE"
            ) from None
        source = f"{task.hub[0]}/{task.hub[1]} ({hub_split})"
    else:
        raise DataError(f"task {task.name!r} is not on the hub; pass --data DIR or --{split} FILE")
    return validate(frame.rename(columns=dict(task.rename)), task, source)


def require_columns(frame: pd.DataFrame, needed: Sequence[str], source: str) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; available columns are {list(map(str, frame.columns))}")


def validate(frame: pd.DataFrame, task: Task, source: str) -> Split:
    needed = [*task.text_columns, task.label_column]
    require_columns(frame, needed, source)
    records = frame[needed].to_dict("records")
    check_header_not_repeated(records, source)
    for number, row in enumerate(records, start=1):
        for column in task.text_columns:
            value = row[column]
            if value is not None and not isinstance(value, str) and not (isinstance(value, float) and value != value):
                raise DataError(f"{source}: row {number}, column {column!r} holds {type(value).__name__} {value!r}, not text; "
                                "the text columns must hold strings (quote them in JSON)")
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{source}: row {number}, column {column!r} is empty; every row needs text")
    labels = [row[task.label_column] for row in records]
    rows = [{column: row[column] for column in task.text_columns} for row in records]
    return Split(rows, encode_labels(labels, task, source), source, task)


def check_header_not_repeated(records: list[dict], source: str) -> None:
    """A row whose every cell is its column's name is a header pasted in again (files joined with `cat`)."""
    for number, row in enumerate(records, start=1):
        if all(str(value).strip() == str(column) for column, value in row.items()):
            raise DataError(f"{source}: row {number} repeats the header {list(row)}; remove it (files joined with their headers?)")


def check_labels_present(values: list, column: str, source: str) -> None:
    for number, value in enumerate(values, start=1):
        if value is None or (isinstance(value, float) and value != value) or not str(value).strip():
            raise DataError(f"{source}: row {number}, column {column!r} is empty; every row needs a label")


def encode_labels(values: list, task: Task, source: str) -> list[int] | list[float]:
    column = task.label_column
    check_labels_present(values, column, source)
    if task.is_regression:
        encoded = []
        for number, value in enumerate(values, start=1):
            try:
                score = float(value)
            except (TypeError, ValueError):
                raise DataError(f"{source}: row {number}, column {column!r}: {value!r} is not a number") from None
            if not math.isfinite(score):
                raise DataError(f"{source}: row {number}, column {column!r}: {value!r} is not a finite number; "
                                "a regression label must be a real score (drop rows without one)")
            encoded.append(score)
        return encoded
    names = {name: index for index, name in enumerate(task.label_names)}
    numeric_names = all(as_number(name) is not None for name in names)
    by_value = {as_number(name): index for name, index in names.items()} if numeric_names else {}
    encoded, kinds = [], {}
    for number, value in enumerate(values, start=1):
        text = str(value).strip()
        if text in names or as_number(text) in by_value:
            kinds.setdefault("name", (number, text))
            encoded.append(names[text] if text in names else by_value[as_number(text)])
            continue
        index = None if numeric_names else as_int(text)  # numeric classes match by value, never by position
        if index is None or not 0 <= index < len(names):
            indices = "" if numeric_names else f" or an index 0..{len(names) - 1}"
            raise DataError(
                f"{source}: row {number}, column {column!r}: unknown label {value!r}; expected one of {list(names)}{indices}"
            )
        kinds.setdefault("index", (number, text))
        encoded.append(index)
    if len(kinds) > 1:
        (_, (row_a, a)), (_, (row_b, b)) = sorted(kinds.items(), key=lambda item: item[1][0])
        raise DataError(
            f"{source}: column {column!r} mixes label names and indices (row {row_a}: {a!r}, row {row_b}: {b!r}); "
            "use one kind throughout"
        )
    return encoded


def as_number(text: str) -> float | None:
    try:
        number = float(text)
    except (TypeError, ValueError):
        return None
    return number if number == number else None


def as_int(text: str) -> int | None:
    number = as_number(text)
    return int(number) if number is not None and number.is_integer() else None


def custom_task(
    train_file: str | Path, text_column: str, text_pair_column: str | None, label_column: str, regression: bool
) -> Task:
    """A task for user files; class names are the distinct labels of the training file, sorted."""
    text_columns = (text_column,) if text_pair_column is None else (text_column, text_pair_column)
    task = Task(
        name=Path(train_file).stem, text_columns=text_columns, label_names=None, label_column=label_column,
        metrics=("pearson", "spearman"),
    )
    if regression:
        return task
    frame = read_table(train_file)
    if label_column not in frame.columns:
        raise DataError(f"{train_file}: missing column {label_column!r}; available columns are {list(frame.columns)}")
    records = frame[[c for c in (*text_columns, label_column) if c in frame.columns]].to_dict("records")
    check_header_not_repeated(records, str(train_file))
    labels = [record[label_column] for record in records]
    check_labels_present(labels, label_column, str(train_file))
    values = sorted({str(v).strip() for v in labels})
    numbers = [as_number(v) for v in values]
    if all(n is not None for n in numbers):
        if not all(n.is_integer() for n in numbers):
            fractional = [v for v, n in zip(values, numbers, strict=True) if not n.is_integer()]
            raise DataError(
                f"{train_file}: column {label_column!r} holds numbers that are not whole ({', '.join(fractional[:3])}, ...): "
                "pass --regression for real-valued labels, or give classes as names or whole numbers"
            )
        values = [str(n) for n in sorted({int(n) for n in numbers})]
    elif any(n is not None for n in numbers):
        raise DataError(
            f"{train_file}: column {label_column!r} mixes label names and numbers ({values[:6]}); use one kind throughout"
        )
    if len(values) < 2:
        raise DataError(f"{train_file}: column {label_column!r} has one label value {values}; a classifier needs two or more")
    return replace(task, label_names=tuple(values), metrics=("accuracy",))


def tokenize(split: Split, tokenizer: PreTrainedTokenizerBase, max_length: int) -> Dataset:
    """Token ids cut to `max_length` (the text is cut, never the prompt), with lengths for length-grouped batches."""
    ids, counts = encode_rows(split.task, split.rows, tokenizer, max_length)
    too_long = sum(count > max_length for count in counts)
    if too_long:
        logger.warning("%s: %d of %d rows are longer than %d tokens and were cut", split.source, too_long, len(ids), max_length)
    return Dataset.from_dict({"input_ids": ids, "labels": split.labels, "length": [len(row) for row in ids]})


def not_unicode(text: str) -> str | None:
    """Why no tokenizer can read `text` (a lone surrogate, e.g. from a JSON "\\ud800" escape), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return f"character {error.start} ({text[error.start]!r}) is a lone surrogate, not text; give valid Unicode"
    return None


def text_row(row: Row, number: int, task: Task) -> Mapping[str, str]:
    """A row's text columns; a plain string is the text of a one-column task."""
    columns = task.text_columns
    if isinstance(row, str):
        if len(columns) > 1:
            raise DataError(f"text {number}: task {task.name!r} classifies text pairs; give an object with fields {list(columns)}")
        row = {columns[0]: row}
    missing = [c for c in columns if not isinstance(row.get(c), str)]
    if missing:
        raise DataError(f"text {number}: task {task.name!r} needs string field(s) {missing}, got fields {sorted(row)}")
    for column in columns:
        if problem := not_unicode(row[column]):
            raise DataError(f"text {number}, field {column!r}: {problem}")
    return row


def encode_rows(
    task: Task, rows: Sequence[Row], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> tuple[list[list[int]], list[int]]:
    """Token ids of each formatted row, at most `max_length`, and each row's token count before any cut.

    A row too long is cut inside its text columns, never in the template around them: the longest column loses
    a token at a time (transformers' longest-first rule for pairs, so neither sentence of a pair is lost), and
    the cut columns are formatted again.
    """
    rows = [task.rendered(text_row(row, number, task)) for number, row in enumerate(rows, start=1)]
    ids = tokenizer([task.format(row) for row in rows], add_special_tokens=True).input_ids
    counts = [len(row_ids) for row_ids in ids]
    for i, row in enumerate(rows):
        if counts[i] > max_length:
            ids[i] = cut_columns(task, row, ids[i], tokenizer, max_length)
    return ids, counts


def cut_columns(task: Task, row: Mapping[str, str], ids: list[int], tokenizer: PreTrainedTokenizerBase, max_length: int) -> list[int]:
    columns = task.text_columns
    pieces = tokenizer([row[c] for c in columns], add_special_tokens=False, return_offsets_mapping=tokenizer.is_fast)
    lengths = [len(piece) for piece in pieces.input_ids]
    budget = max_length - (len(ids) - sum(lengths))  # what the template and special tokens leave
    for _ in range(4):  # a cut can merge or split tokens at its edges; shrink until the formatted row fits
        keep = longest_first(lengths, max(budget, 0))
        cut = {c: prefix(row[c], pieces, i, n, tokenizer) for i, (c, n) in enumerate(zip(columns, keep, strict=True))}
        new_ids = tokenizer(task.format(cut), add_special_tokens=True).input_ids
        if len(new_ids) <= max_length:
            return new_ids
        budget -= len(new_ids) - max_length
    return new_ids[:max_length]


def longest_first(lengths: list[int], budget: int) -> list[int]:
    """Tokens each column keeps under the `tokenizers` library's longest-first rule: the longest columns are cut
    to one level, and where that leaves a token over, the one that was longer (on a tie, the later) keeps it."""
    if sum(lengths) <= budget:
        return list(lengths)
    low, high = 0, max(lengths)  # the largest level t with sum(min(n, t)) <= budget
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if sum(min(n, middle) for n in lengths) <= budget else (low, middle - 1)
    keep = [min(n, low) for n in lengths]
    extra = budget - sum(keep)  # fewer than the columns cut to `low`
    for i in sorted((i for i, n in enumerate(lengths) if n > low), key=lambda i: (lengths[i], i), reverse=True)[:extra]:
        keep[i] += 1
    return keep


def prefix(text: str, pieces, column: int, tokens: int, tokenizer: PreTrainedTokenizerBase) -> str:
    """The text of a column's first `tokens` tokens; a character split over several byte tokens is dropped whole."""
    if tokens >= len(pieces.input_ids[column]):
        return text
    if tokens == 0:
        return ""
    if tokenizer.is_fast:  # up to where the first dropped token starts, so the cut text never holds more
        return text[: pieces["offset_mapping"][column][tokens][0]]
    return tokenizer.decode(pieces.input_ids[column][:tokens], clean_up_tokenization_spaces=False)
