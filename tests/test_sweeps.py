"""Sweep files: the grid expands to the right runs, and every mistake is refused with its line before any run."""

import textwrap

import pytest

from suffixtune.cli import main
from suffixtune.errors import ConfigError
from suffixtune.sweeps import load_sweep
from suffixtune.training import train_parser

STUDY = """\
name: study
fixed:
  model: smollm2-135m
  task: sst2
  max_train_samples: 400
grid:
  method: [suffix, prefix, head]
  prompt_length: [1, 5]
  seed: [0, 1]
overrides:
  - when: {method: head}
    set: {learning_rate: 0.01}
"""


def write(tmp_path, text):
    path = tmp_path / "sweep.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_grid_expands_applies_overrides_and_merges_runs_an_option_does_not_reach(tmp_path):
    sweep = load_sweep(write(tmp_path, STUDY))
    runs = sweep.runs()
    assert sweep.cells == 12 and len(runs) == 10  # head has no prompt length: its 2 × 2 cells are 2 runs
    assert [r.name for r in runs][:2] == ["method=suffix,prompt_length=1,seed=0", "method=suffix,prompt_length=1,seed=1"]
    head = [r for r in runs if r.settings["method"] == "head"]
    assert [r.name for r in head] == ["method=head,seed=0", "method=head,seed=1"]
    assert all(r.settings["learning_rate"] == 0.01 and "prompt_length" not in r.settings for r in head)
    assert all("learning_rate" not in r.settings for r in runs if r.settings["method"] != "head")
    assert len({r.run_id for r in runs}) == 10

    argv = runs[0].to_argv()
    assert argv == ["--model", "smollm2-135m", "--task", "sst2", "--max_train_samples", "400", "--method", "suffix",
                    "--prompt_length", "1", "--seed", "0"]
    *_, method_config, training, _decoding = train_parser("suffix").parse_args_into_dataclasses(argv)
    assert method_config.prompt_length == 1 and training.seed == 0


def test_run_ids_do_not_depend_on_the_order_of_settings(tmp_path):
    reordered = STUDY.replace("  method: [suffix, prefix, head]\n  prompt_length: [1, 5]\n", "  prompt_length: [1, 5]\n  method: [suffix, prefix, head]\n")
    first = {r.run_id for r in load_sweep(write(tmp_path, STUDY)).runs()}
    assert {r.run_id for r in load_sweep(write(tmp_path, reordered)).runs()} == first


MISTAKES = {
    "unknown section": ("gird:\n  seed: [0]\n", r"sweep.yaml:1: unknown section 'gird' \(did you mean 'grid'\?\)"),
    "unknown setting": ("fixed:\n  task: sst2\n  prompt_lenght: 5\n", r"sweep.yaml:3: unknown setting 'prompt_lenght' \(did you mean 'prompt_length'\?\)"),
    "setting far from any flag": ("fixed:\n  task: sst2\n  zzz: 5\n",
                                  r"sweep.yaml:3: unknown setting 'zzz'; choose from the flags of `suffixtune train --method NAME --help`$"),
    "unknown method": ("grid:\n  method:\n    - suffix\n    - prefx\n", r"sweep.yaml:4: unknown method 'prefx' \(did you mean 'prefix'\?\)"),
    "unknown task": ("fixed:\n  task: sst3\n", r"sweep.yaml:2: unknown task 'sst3'"),
    "output set by hand": ("fixed:\n  output_dir: runs/x\n", r"sweep.yaml:2: output_dir cannot be set in a sweep"),
    "empty grid list": ("grid:\n  seed: []\n", r"sweep.yaml:2: grid.seed must be a non-empty list"),
    "option of no method run": ("grid:\n  method: [suffix]\n  lora_r: [4, 8]\n", r"sweep.yaml:3: lora_r is an option of lora, suffix-lora, which this sweep does not run"),
    "value that does not parse": ("grid:\n  method: [suffix]\n  prompt_length: [1, five]\n",
                                  r"sweep.yaml:3: run method=suffix,prompt_length=five: argument --prompt_length.*invalid int value: 'five'"),
    "bad override": ("overrides:\n  - when: {method: head}\n    put: {seed: 1}\n", r"sweep.yaml:2: each override is \{when"),
    "not YAML": ("grid: [a\n", r"sweep.yaml:2: not valid YAML"),
    "unknown sampler": ("search:\n  sampler: bayes\n  space: {learning_rate: {low: 0.001, high: 0.1}}\n",
                        r"sweep.yaml:2: unknown sampler 'bayes'; choose from \['qmc', 'random', 'tpe'\]"),
    "log range from zero": ("search:\n  space:\n    learning_rate: {low: 0, high: 0.1, log: true}\n",
                            r"sweep.yaml:3: learning_rate: need 0 < low < high for a log range"),
    "searched and in the grid": ("grid:\n  learning_rate: [0.01]\nsearch:\n  space:\n    learning_rate: {low: 0.001, high: 0.1}\n",
                                 r"sweep.yaml:5: learning_rate is both in the grid and searched"),
    "a name that is a path": ("name: ../../evil\ngrid:\n  seed: [0]\n",
                              r"sweep.yaml:1: name '../../evil' is used as a directory name: use letters, digits, - and _, no path"),
    "unknown searched setting": ("search:\n  space:\n    learnig_rate: {low: 0.001, high: 0.1}\n",
                                 r"sweep.yaml:3: unknown setting 'learnig_rate' \(did you mean 'learning_rate'\?\)"),
}


@pytest.mark.parametrize("case", list(MISTAKES))
def test_mistakes_are_refused_with_their_line(tmp_path, case):
    text, message = MISTAKES[case]
    with pytest.raises(ConfigError, match=message):
        load_sweep(write(tmp_path, text))


def test_sweep_plan_prints_every_run(tmp_path, capsys):
    assert main(["sweep", "plan", str(write(tmp_path, STUDY))]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "sweep 'study': 10 runs from 12 grid cells (2 merged: an option that does not apply to their method left them identical)"
    assert len(lines) == 11 and lines[-1].endswith("suffixtune train --model smollm2-135m --task sst2 --max_train_samples 400 --method head --seed 1 --learning_rate 0.01")
    assert main(["sweep", "plan", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: cannot read the sweep file (No such file or directory)" in capsys.readouterr().err
