"""Sweep files: fixed settings, a grid and per-cell overrides in YAML, checked line by line before any run starts.

    name: sst2-suffix-vs-prefix
    fixed: {model: smollm2-135m, task: sst2, data: ../shared/data/sst2, max_train_samples: 1600}
    grid:
      method: [suffix, prefix, head]
      prompt_length: [1, 5, 10, 20]
      seed: [0, 1]
    overrides:
      - when: {method: head}
        set: {learning_rate: 1e-2}
    search:                      # optional: an Optuna sampler draws these settings, `trials` times per grid cell
      sampler: tpe               # tpe, random or qmc
      trials: 8
      space:
        learning_rate: {low: 1e-4, high: 1e-1, log: true}

Every setting is a `suffixtune train` flag. A method's own option (prompt_length, lora_r, blocks, ...) is left
out of the runs of methods without it, and the runs that become identical are done once.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

from ..decoding import Decoding
from ..errors import ConfigError
from ..methods import METHODS
from ..tasks import TASKS
from ..training.arguments import DataArguments, MethodArguments, ModelArguments, TrainingArguments, train_parser

SECTIONS = ("name", "fixed", "grid", "overrides", "search")
SAMPLERS = {
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    "qmc": lambda seed: optuna.samplers.QMCSampler(seed=seed, scramble=True),
}
SET_BY_SWEEP = {"output_dir": "each run's directory is set by the sweep"}
RUN_SETTINGS = {f.name for cls in (ModelArguments, DataArguments, MethodArguments, TrainingArguments, Decoding) for f in dataclasses.fields(cls)}
METHOD_OPTIONS = {name: {f.name for f in dataclasses.fields(cls.config_class)} for name, cls in METHODS.items()}
KNOWN_SETTINGS = RUN_SETTINGS | set().union(*METHOD_OPTIONS.values())


@dataclass(frozen=True)
class PlannedRun:
    """One training run of a sweep: its settings, and a name and id that do not depend on the order of the grid."""

    settings: Mapping[str, Any]
    varied: tuple[str, ...]  # the grid keys, for the run's name
    cell_id: str | None = None  # set on runs a search derived from a grid cell

    @property
    def name(self) -> str:
        return ",".join(f"{key}={self.settings[key]}" for key in self.varied if key in self.settings)

    @property
    def run_id(self) -> str:
        if self.cell_id is not None:
            return self.cell_id
        return hashlib.blake2b(json.dumps(self.settings, sort_keys=True, default=str).encode(), digest_size=6).hexdigest()

    def with_settings(self, settings: Mapping[str, Any]) -> PlannedRun:
        """This run with `settings` (drawn by a search) added; its name and id stay those of its grid cell."""
        return PlannedRun({**self.settings, **settings}, self.varied, self.run_id)

    def to_argv(self) -> list[str]:
        """The settings as `suffixtune train` flags."""
        argv = []
        for key, value in self.settings.items():
            values = value if isinstance(value, list) else [value]
            argv += [f"--{key}", *(str(v).lower() if isinstance(v, bool) else str(v) for v in values)]
        return argv


@dataclass(frozen=True)
class Search:
    """Settings an Optuna sampler draws for each of a grid cell's `trials` runs, from that cell's finished runs."""

    sampler: str
    trials: int
    space: Mapping[str, Mapping[str, Any]]  # name: {low, high, log} or {choices: [...]}

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        made = {}
        for name, spec in self.space.items():
            if "choices" in spec:
                made[name] = optuna.distributions.CategoricalDistribution(spec["choices"])
            elif all(isinstance(spec[bound], int) for bound in ("low", "high")):
                made[name] = optuna.distributions.IntDistribution(spec["low"], spec["high"], log=spec.get("log", False))
            else:
                made[name] = optuna.distributions.FloatDistribution(float(spec["low"]), float(spec["high"]), log=spec.get("log", False))
        return made

    def make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return SAMPLERS[self.sampler](seed)


@dataclass
class Sweep:
    name: str
    fixed: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    overrides: list[dict[str, dict[str, Any]]] = field(default_factory=list)
    search: Search | None = None
    source: str = ""

    @property
    def trials_per_run(self) -> int:
        return self.search.trials if self.search else 1

    @property
    def cells(self) -> int:
        return math.prod(len(values) for values in self.grid.values())

    def runs(self) -> list[PlannedRun]:
        """Every cell of the grid with its overrides applied, each distinct run once, in grid order."""
        planned: dict[str, PlannedRun] = {}
        keys = list(self.grid)
        for values in itertools.product(*self.grid.values()):
            settings = {**self.fixed, **dict(zip(keys, values, strict=True))}
            for override in self.overrides:
                if all(settings.get(k) == v for k, v in override["when"].items()):
                    settings.update(override["set"])
            method = settings.get("method", MethodArguments.method)
            own = METHOD_OPTIONS[method]
            settings = {k: v for k, v in settings.items() if k in RUN_SETTINGS or k in own}
            run = PlannedRun(settings, tuple(keys))
            planned.setdefault(run.run_id, run)
        return list(planned.values())


def load_sweep(path: str | os.PathLike) -> Sweep:
    """Read and check a sweep file; every error names the file and line and says what would work."""
    path = Path(path)
    try:
        text = path.read_text()
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the sweep file ({error.strerror})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(error, 'problem', error)})") from None
    lines = key_lines(root)
    check = Checker(path, lines)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a sweep file is a mapping with keys {list(SECTIONS)}")
    for key in data:
        check.known(key, SECTIONS, (key,), "section")
    fixed, grid, overrides = data.get("fixed") or {}, data.get("grid") or {}, data.get("overrides") or []
    check.mapping(fixed, ("fixed",))
    check.mapping(grid, ("grid",))
    for key, value in fixed.items():
        check.setting(key, value, ("fixed", key))
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise check.error(("grid", key), f"grid.{key} must be a non-empty list, e.g. {key}: [a, b]")
        for index, value in enumerate(values):
            check.setting(key, value, ("grid", key, index))
    if not isinstance(overrides, list):
        raise check.error(("overrides",), "overrides is a list of {when: {...}, set: {...}}")
    for index, override in enumerate(overrides):
        where = ("overrides", index)
        if not isinstance(override, dict) or set(override) != {"when", "set"}:
            raise check.error(where, "each override is {when: {setting: value}, set: {setting: value}}")
        for part in ("when", "set"):
            check.mapping(override[part], (*where, part))
            for key, value in override[part].items():
                check.setting(key, value, (*where, part, key))
    search = check.search(data["search"], grid) if data.get("search") is not None else None
    name = str(data.get("name") or path.stem)
    if not name.strip() or "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
        raise check.error(("name",), f"name {name!r} is used as a directory name: use letters, digits, - and _, no path")
    sweep = Sweep(name=name, fixed=fixed, grid=grid, overrides=overrides, search=search,
                  source=str(path))
    check.options_apply(sweep)
    check.runs_parse(sweep)
    return sweep


class Checker:
    def __init__(self, path: Path, lines: dict[tuple, int]):
        self.path, self.lines = path, lines

    def error(self, where: tuple, message: str) -> ConfigError:
        line = next((self.lines[where[:n]] for n in range(len(where), 0, -1) if where[:n] in self.lines), None)
        return ConfigError(f"{self.path}{f':{line}' if line else ''}: {message}")

    def known(self, key: Any, choices, where: tuple, kind: str) -> None:
        if key not in choices:
            hint = difflib.get_close_matches(str(key), [str(c) for c in choices], n=1)
            if hint:  # the choices can be all of train's flags: the near one is the help a typo needs
                raise self.error(where, f"unknown {kind} {key!r} (did you mean {hint[0]!r}?)")
            listed = sorted(choices) if len(choices) <= 20 else "the flags of `suffixtune train --method NAME --help`"
            raise self.error(where, f"unknown {kind} {key!r}; choose from {listed}")

    def mapping(self, value: Any, where: tuple) -> None:
        if not isinstance(value, dict):
            raise self.error(where, f"{'.'.join(map(str, where))} must be a mapping of settings, e.g. {{method: suffix}}")

    def setting(self, key: str, value: Any, where: tuple) -> None:
        if key in SET_BY_SWEEP:
            raise self.error(where, f"{key} cannot be set in a sweep: {SET_BY_SWEEP[key]}")
        self.known(key, KNOWN_SETTINGS, where, "setting")
        if key == "method":
            self.known(value, METHODS, where, "method")
        if key == "task":
            self.known(value, TASKS, where, "task")

    def search(self, search: Any, grid: dict[str, list]) -> Search:
        if not isinstance(search, dict) or set(search) - {"sampler", "trials", "space"} or "space" not in search:
            raise self.error(("search",), "search is {sampler: tpe|random|qmc, trials: N, space: {setting: {low, high, log}}}")
        sampler, trials = search.get("sampler", "tpe"), search.get("trials", 8)
        self.known(sampler, SAMPLERS, ("search", "sampler"), "sampler")
        if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
            raise self.error(("search", "trials"), f"search.trials must be a whole number of runs per grid cell, got {trials!r}")
        self.mapping(search["space"], ("search", "space"))
        for name, spec in search["space"].items():
            where = ("search", "space", name)
            self.setting(name, None, where)
            if name in grid:
                raise self.error(where, f"{name} is both in the grid and searched; keep it in one of them")
            ranged = isinstance(spec, dict) and {"low", "high"} <= set(spec) <= {"low", "high", "log"}
            ranged = ranged and all(isinstance(spec[b], int | float) and not isinstance(spec[b], bool) for b in ("low", "high"))
            listed = isinstance(spec, dict) and set(spec) == {"choices"} and isinstance(spec["choices"], list) and spec["choices"]
            if not (ranged or listed):
                raise self.error(where, f"search space of {name} is {{low: L, high: H, log: true|false}} or {{choices: [a, b]}}")
            if ranged and (spec["low"] >= spec["high"] or (spec.get("log") and spec["low"] <= 0)):
                raise self.error(where, f"{name}: need 0 < low < high for a log range, low < high otherwise")
        return Search(sampler, trials, search["space"])

    def options_apply(self, sweep: Sweep) -> None:
        """A method's own option must belong to a method the sweep runs."""
        methods = set(sweep.grid.get("method", [sweep.fixed.get("method", MethodArguments.method)]))
        methods |= {o["set"]["method"] for o in sweep.overrides if "method" in o["set"]}
        for section in ("fixed", "grid"):
            for key in getattr(sweep, section):
                if key not in RUN_SETTINGS and not any(key in METHOD_OPTIONS[m] for m in methods):
                    owners = sorted(m for m, options in METHOD_OPTIONS.items() if key in options)
                    raise self.error((section, key), f"{key} is an option of {', '.join(owners)}, which this sweep does not run")


    def runs_parse(self, sweep: Sweep) -> None:
        """Each run's flags must parse as `suffixtune train` would parse them, so no run fails on a typo later."""
        searched = {name: spec["choices"][0] if "choices" in spec else spec["low"]
                    for name, spec in (sweep.search.space.items() if sweep.search else ())}
        for run in sweep.runs():
            try:
                train_parser(run.settings.get("method", MethodArguments.method), exit_on_error=False).parse_args_into_dataclasses(
                    run.with_settings(searched).to_argv()
                )
            except (argparse.ArgumentError, ValueError, ConfigError) as error:
                flag = getattr(error, "argument_name", None) or ""
                key = flag.split("/")[0].removeprefix("--").replace("-", "_")
                places = [(section, key) for section in ("grid", "fixed")]
                places += [("overrides", i, "set", key) for i in range(len(sweep.overrides))]
                where = next((place for place in places if place in self.lines), ())
                raise self.error(where, f"run {run.name or run.run_id}: {error}") from None


def key_lines(node: yaml.Node | None, path: tuple = ()) -> dict[tuple, int]:
    """1-based line of every mapping key and list item, by its path of keys and indices."""
    lines: dict[tuple, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key_path = (*path, key_node.value)
            lines[key_path] = key_node.start_mark.line + 1
            lines.update(key_lines(value_node, key_path))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            lines.update(key_lines(item, (*path, index)))
    return lines
