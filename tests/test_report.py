"""Reports from stored runs: tables with the true best in bold, figures in PNG and SVG, and an HTML page Chromium renders."""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap

import pandas as pd
import pytest

from conftest import write_toy_csv
from suffixtune import results
from suffixtune.cli import main
from suffixtune.methods import METHODS, Method, register_method
from suffixtune.report import plots
from suffixtune.report.tables import summary_table


def test_summary_table_means_stds_and_bolds_the_best_of_each_column():
    frame = pd.DataFrame({
        "method": ["suffix", "suffix", "prefix", "prefix", "head", "suffix"],
        "prompt_length": [5, 5, 5, 5, None, 5],
        "model": ["gpt2", "gpt2", "gpt2", "gpt2", "gpt2", "gpt2-medium"],
        "task": ["sst2"] * 6,
        "accuracy": [0.80, 0.90, 0.86, 0.86, 0.87, 0.70],
        "report_order": [10, 10, 20, 20, 70, 10],
    })
    table = summary_table(frame, "accuracy")
    assert table.column_key == "model" and table.columns == ["gpt2", "gpt2-medium"]
    assert table.rows == [("suffix", "5"), ("prefix", "5"), ("head", "–")]
    markdown = table.to_markdown().splitlines()
    assert markdown[2] == "| suffix | 5 | 0.850 ± 0.071 | **0.700** |"
    assert markdown[3] == "| prefix | 5 | 0.860 ± 0.000 |  |"
    assert markdown[4] == "| head | – | **0.870** |  |"  # 0.870 beats the suffix mean 0.850 although one suffix seed is higher
    latex = table.to_latex()
    assert "head & – & \\textbf{0.870} &  \\\\" in latex and "0.850 $\\pm$ 0.071" in latex


class Readout(Method):
    """A method added elsewhere: positions after the text but no prompt vectors, ranked between suffix and prefix."""

    name = "readout"
    default_learning_rate = 1e-3
    adds_prompt_positions = True
    report_order = 15


@pytest.fixture
def readout():
    register_method(Readout)
    yield Readout
    del METHODS[Readout.name]


def stored(method: str, accuracy: float, prompt_length: int | None = None, old: bool = False) -> dict:
    """What results reads of a run's metrics.json: as `train` writes it, or (old) as it did before method facts."""
    record = {"run_id": f"{method}-{accuracy}", "name": method, "status": "ok", "method": method, "model": "gpt2",
              "task": "sst2", "eval": {"eval_accuracy": accuracy}}
    if old:
        return record | {"config": {"method_config": {"prompt_length": prompt_length}}}
    return record | {"method_facts": METHODS[method].facts(), "prompt_length": prompt_length}


def test_the_report_takes_a_methods_order_and_prompt_from_its_runs_records(readout):
    frame = pd.DataFrame([results.run_row("study", record) for record in [
        stored("head", 0.80), stored("suffix", 0.90, 4), stored("readout", 0.75, 2),
        stored("prefix", 0.70, 4, old=True),  # from the registry
        stored("retired", 0.60, 4, old=True),  # unregistered: no prompt, last
    ]])
    table = summary_table(frame, "accuracy")
    assert table.rows == [("suffix", "4"), ("readout", "2"), ("prefix", "4"), ("head", "–"), ("retired", "–")]
    assert table.to_markdown().splitlines()[3] == "| readout | 2 | 0.750 |"
    assert list(frame.loc[frame["has_prompt_vectors"], "method"]) == ["suffix", "prefix"]  # the prompts inspected
    assert not frame["did_not_learn"].any()  # no record says so (old records have no such field)
    warned = results.run_row("study", stored("suffix", 0.5, 4) | {"did_not_learn": "accuracy 0.5000 is within ..."})
    assert warned["did_not_learn"] is True
    figure = plots.best_vs_prompt_length(frame, "accuracy")
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    plots.plt.close(figure)
    assert sorted(legend) == ["head (no prompt)", "prefix", "readout", "retired (no prompt)", "suffix"]


def test_throughput_is_drawn_apart_for_each_machine_a_sweep_ran_on():
    frame = pd.DataFrame({
        "method": ["suffix", "suffix", "suffix", "head"], "model": ["gpt2"] * 4, "report_order": [10, 10, 10, 70],
        "machine": ["Intel Xeon", "AMD EPYC", "AMD EPYC", "Intel Xeon"],
        "train_samples_per_second": [12.0, 4.0, 6.0, 30.0], "peak_memory_bytes": [2**30, 2**31, 2**31, 2**30],
    })
    figure = plots.throughput_and_memory(frame)
    speed = figure.axes[0]
    heights = {text.get_text(): [bar.get_height() for bar in container]
               for text, container in zip(speed.get_legend().get_texts(), speed.containers, strict=True)}
    plots.plt.close(figure)
    assert set(heights) == {"gpt2 · AMD EPYC", "gpt2 · Intel Xeon"}
    assert heights["gpt2 · AMD EPYC"][0] == 5.0 and heights["gpt2 · Intel Xeon"] == [12.0, 30.0]
    one_machine = plots.throughput_and_memory(frame[frame["machine"] == "Intel Xeon"])
    assert one_machine.axes[0].get_legend() is None and len(one_machine.axes[0].containers) == 1
    plots.plt.close(one_machine)


@pytest.fixture(scope="module")
def sweep_storage(tmp_path_factory, tiny_model_dir):
    directory = tmp_path_factory.mktemp("report-sweep")
    write_toy_csv(directory / "train.csv", rows=48, seed=0)
    write_toy_csv(directory / "validation.csv", rows=24, seed=1)
    sweep = directory / "sweep.yaml"
    sweep.write_text(textwrap.dedent(f"""\
        name: report
        fixed: {{model: {tiny_model_dir}, train: {directory / 'train.csv'}, validation: {directory / 'validation.csv'},
                text_column: text, num_train_epochs: 2, per_device_train_batch_size: 16, disable_tqdm: true}}
        grid:
          method: [suffix, prefix, head]
          prompt_length: [1, 3]
          seed: [0, 1]
        """))
    assert main(["sweep", "run", str(sweep), "--output-dir", str(directory / "out")]) == 0
    return directory / "out"


@pytest.mark.slow
def test_report_from_stored_runs(sweep_storage, tmp_path):
    out = tmp_path / "report"
    assert main(["report", "--storage", str(sweep_storage), "--out", str(out)]) == 0
    frame = results.load(sweep_storage)
    assert len(frame) == 10  # suffix and prefix × 2 lengths × 2 seeds, head × 2 seeds
    assert all(run.record["method_facts"] == METHODS[run.method].facts() for run in frame.itertuples())

    means = frame.assign(p=frame["prompt_length"].fillna(0)).groupby(["method", "p"])["accuracy"].mean()
    bold = [line for line in (out / "tables.md").read_text().splitlines() if "**" in line]
    best = means[means == means.max()]
    assert len(bold) == len(best)
    for line in bold:
        method, length = [cell.strip() for cell in line.strip("|").split("|")][:2]
        assert (method, 0 if length == "–" else int(length)) in best.index
        assert f"**{means.max():.3f}" in line
    assert (out / "tables.tex").read_text().count("\\textbf") == len(best)

    for name in ("metric_per_epoch", "best_vs_prompt_length", "metric_vs_parameters", "throughput_and_memory"):
        assert (out / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"<svg" in (out / "figures" / f"{name}.svg").read_bytes()[:1000]
    report_md = (out / "report.md").read_text()
    assert "Prompt inspection" in report_md and "Prompt similarity between seeds" in report_md
    assert pd.read_csv(out / "runs.csv")["run_id"].nunique() == 10

    html = (out / "index.html").read_text()
    assert not re.search(r'(src|href)="(?!data:)', html)  # nothing to fetch: the page works offline
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("Chromium not found; `apt-get install chromium` runs the browser check of index.html")
    probe = ("<script>addEventListener('load', () => { const images = [...document.images]; document.title = "
             "'loaded ' + images.filter(i => i.complete && i.naturalWidth > 0).length + ' of ' + images.length; });</script>")
    page = tmp_path / "probe.html"
    page.write_text(html.replace("</body>", probe + "</body>"))
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          "--virtual-time-budget=10000", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert "<title>loaded 4 of 4</title>" in dom


@pytest.mark.slow
def test_results_export_round_trips_through_csv_and_parquet(sweep_storage, tmp_path):
    for suffix in ("csv", "parquet"):
        assert main(["results", "--storage", str(sweep_storage), "--out", str(tmp_path / f"runs.{suffix}")]) == 0
    from_csv, from_parquet = pd.read_csv(tmp_path / "runs.csv"), pd.read_parquet(tmp_path / "runs.parquet")
    stored = results.load(sweep_storage).sort_values("run_id")
    for exported in (from_csv, from_parquet):
        exported = exported.sort_values("run_id")
        assert list(exported["run_id"]) == list(stored["run_id"])
        assert exported["accuracy"].tolist() == pytest.approx(stored["accuracy"].tolist())
    assert main(["results", "--storage", str(sweep_storage), "--out", str(tmp_path / "runs.xlsx")]) == 2


@pytest.mark.slow
def test_report_on_runs_scored_only_after_training(tmp_path, tiny_model_dir):
    write_toy_csv(tmp_path / "train.csv", rows=32, seed=0)
    write_toy_csv(tmp_path / "test.csv", rows=16, seed=1)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(textwrap.dedent(f"""\
        name: scored-once
        fixed: {{model: {tiny_model_dir}, train: {tmp_path / 'train.csv'}, validation: {tmp_path / 'test.csv'},
                text_column: text, eval_strategy: "no", load_best_model_at_end: false, disable_tqdm: true}}
        grid:
          method: [suffix, head]
        """))
    assert main(["sweep", "run", str(sweep), "--output-dir", str(tmp_path / "out")]) == 0
    out = tmp_path / "report"
    assert main(["report", "--storage", str(tmp_path / "out"), "--out", str(out), "--no-inspect"]) == 0
    assert sorted(path.name for path in (out / "figures").glob("*.png")) == [
        "best_vs_prompt_length.png", "metric_vs_parameters.png", "throughput_and_memory.png"]  # no epoch to plot
    assert "metric_per_epoch" not in (out / "report.md").read_text()
    assert pd.read_csv(out / "runs.csv")["accuracy"].between(0, 1).all()
