"""Generation through the CLI on a tiny local model: train, eval, generate; each mistake a one-line error."""

import json

import pytest

from conftest import DATA_DIR
from suffixtune.cli import main

PHRASE = "a quiet place to eat"


def write_pairs(path, rows=48, empty_target_row=None):
    """Sources of varying facts, every one described by the same phrase: learnable by any method in a few steps."""
    lines = ["facts,text"]
    for i in range(rows):
        target = "" if i + 1 == empty_target_row else PHRASE
        lines.append(f"name {i} area {['north', 'south', 'east'][i % 3]},{target}")
    path.write_text("\n".join(lines) + "\n")
    return path


def generation_args(tiny_model_dir, tmp_path, *extra):
    return [
        "train", "--model", str(tiny_model_dir), "--train", str(write_pairs(tmp_path / "train.csv")),
        "--validation", str(write_pairs(tmp_path / "validation.csv", rows=6)), "--text_column", "facts",
        "--target_column", "text", "--output", str(tmp_path / "run"), "--per_device_train_batch_size", "8",
        "--disable_tqdm", "true", "--seed", "0", "--max_target_length", "12", *extra,
    ]


@pytest.mark.slow
def test_custom_generation_data_trains_evaluates_and_writes(tiny_model_dir, tmp_path, capsys):
    args = generation_args(tiny_model_dir, tmp_path, "--method", "full", "--learning_rate", "3e-3", "--num_train_epochs", "4",
                           "--num_beams", "2")
    assert main(args) == 0
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    losses = [epoch["eval_loss"] for epoch in record["epochs"]]
    bleu = [epoch["eval_bleu"] for epoch in record["epochs"]]
    assert len(losses) == 4 and losses == sorted(losses, reverse=True) and losses[-1] < 0.7 * losses[0]
    assert bleu[-1] == pytest.approx(100) and bleu[0] < 100
    assert record["eval"]["bleu"] == pytest.approx(100) and record["config"]["training"]["metric_for_best_model"] == "bleu"
    assert record["samples"][0] == {"source": {"facts": "name 0 area north"}, "written": PHRASE, "references": [PHRASE]}

    capsys.readouterr()
    assert main(["generate", str(tmp_path / "run"), "--text", "name 99 area north", "--num-beams", "2"]) == 0
    assert json.loads(capsys.readouterr().out) == {"facts": "name 99 area north", "generated": PHRASE}
    assert main(["eval", str(tmp_path / "run"), "--validation", str(tmp_path / "validation.csv")]) == 0
    assert json.loads(capsys.readouterr().out)["bleu"] == pytest.approx(100)


@pytest.mark.slow
@pytest.mark.parametrize(("reparam", "learning_rate"), [("false", 3e-3), ("true", 3e-4)])
def test_a_deep_prefix_writer_through_its_mlp_trains_at_a_tenth_of_the_rate_by_default(tiny_model_dir, tmp_path, reparam, learning_rate):
    args = generation_args(tiny_model_dir, tmp_path, "--method", "deep-prefix", "--prompt_length", "2", "--reparam", reparam,
                           "--max_steps", "1", "--num_beams", "1", "--max_eval_samples", "2")
    assert main(args) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["config"]["training"]["learning_rate"] == learning_rate


@pytest.mark.slow
def test_e2e_trains_from_the_dev_set_and_scores_the_test_set(tiny_model_dir, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--model", str(tiny_model_dir), "--task", "e2e", "--data", str(DATA_DIR / "e2e"), "--output", str(run),
            "--method", "deep-prefix", "--prompt_length", "2", "--max_train_samples", "16", "--max_eval_samples", "3",
            "--max_target_length", "8", "--num_beams", "2", "--per_device_train_batch_size", "8", "--disable_tqdm", "true"]
    assert main(args) == 0
    record = json.loads((run / "metrics.json").read_text())
    assert record["train_rows"] == 16 and record["eval_rows"] == 3 and set(record["eval"]) == {"bleu", "rouge_l", "bleu_uncased", "nist_nltk", "rouge_l_coco", "cider", "meteor"}
    assert record["samples"][0]["source"]["mr"].startswith("name[")  # a held-out dev MR with all its references
    assert len(record["samples"][0]["references"]) > 1
    capsys.readouterr()
    assert main(["eval", str(run), "--data", str(DATA_DIR / "e2e"), "--split", "test", "--max-eval-samples", "2",
                 "--num-beams", "1"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["source"].endswith("testset_w_refs.csv") and scored["rows"] == 2
    assert main(["predict", str(run), "--text", "name[The Eagle]"]) == 2
    assert "is a generation artifact (task 'e2e'), not a classification one; use `suffixtune generate`" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--target_column", "summary"], "missing column(s) ['summary']"),
    (["--head", "verbalizer"], "generation task: it writes with the LM's own head (--head lm), not --head verbalizer"),
    (["--method", "suffix-lora"], "--method suffix-lora trains for classification only"),
    (["--label_words", " no", " yes"], "--label_words applies to classification only"),
    (["--num_beams", "0"], "--num_beams must be at least 1"),
    (["--standardize", "features"], "--standardize features applies to the linear head of a classifier"),
    (["--max_target_length", "1"], "--max_target_length must be at least 2"),
])
def test_generation_mistakes_are_one_line_errors(tiny_model_dir, tmp_path, capsys, extra, message):
    assert main(generation_args(tiny_model_dir, tmp_path, *extra)) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


def test_an_empty_target_names_its_row(tiny_model_dir, tmp_path, capsys):
    args = generation_args(tiny_model_dir, tmp_path)
    write_pairs(tmp_path / "train.csv", empty_target_row=5)
    args[args.index("--train") + 1] = str(tmp_path / "train.csv")
    assert main(args) == 2
    assert "train.csv: row 5, column 'text' is empty; every row needs a source and a reference" in capsys.readouterr().err


@pytest.mark.slow
def test_a_generation_sweep_reports_bleu_by_method_and_prompt_length(tiny_model_dir, tmp_path, capsys):
    import textwrap

    from suffixtune import results

    write_pairs(tmp_path / "train.csv", rows=16)
    write_pairs(tmp_path / "validation.csv", rows=3)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(textwrap.dedent(f"""\
        name: writing
        fixed: {{model: {tiny_model_dir}, train: {tmp_path / 'train.csv'}, validation: {tmp_path / 'validation.csv'},
                text_column: facts, target_column: text, max_target_length: 8, num_beams: 2,
                per_device_train_batch_size: 8, disable_tqdm: true}}
        grid:
          method: [suffix, deep-prefix, lora]
          prompt_length: [1, 2]
        """))
    assert main(["sweep", "run", str(sweep), "--output-dir", str(tmp_path / "out")]) == 0
    frame = results.load(tmp_path / "out")
    assert len(frame) == 5 and frame["bleu"].notna().all()  # lora has no prompt length: one run
    assert main(["report", "--storage", str(tmp_path / "out"), "--out", str(tmp_path / "report")]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert report["metric"] == "bleu" and report["inspected"] == 1  # the suffix prompt (deep-prefix has no vectors)
    tables = (tmp_path / "report" / "tables.md").read_text()
    assert tables.startswith("### bleu by ")
    assert (tmp_path / "report" / "figures" / "best_vs_prompt_length.png").is_file()
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "nearest tokens" in markdown.lower()
    assert "![BLEU after each epoch (mean over seeds)" in markdown and "![Best BLEU against prompt length" in markdown


def test_several_artifacts_write_one_line_per_source_with_one_text_per_task(tiny_model_dir, tmp_path, capsys):
    import torch

    from suffixtune import Decoding, Generator, load_backbone
    from suffixtune.methods.soft_prompt import SoftPromptConfig
    from suffixtune.tasks import Task

    task = Task(name="describe", kind="generation", text_columns=("facts",), target_column="text", label_names=None)
    backbone, tokenizer = load_backbone(str(tiny_model_dir))
    for seed, name in enumerate(["short", "long"]):
        torch.manual_seed(seed)
        config = SoftPromptConfig(prompt_length=1 + 4 * seed, prompt_init="random")
        Generator.build(backbone, tokenizer, task, "suffix", config, max_target_length=8).save_pretrained(tmp_path / name)
    sources = ["name 1 area north", "name 22 area south"]
    expected = {name: Generator.from_pretrained(tmp_path / name).generate([{"facts": s} for s in sources], Decoding(num_beams=2))
                for name in ["short", "long"]}
    capsys.readouterr()
    assert main(["generate", f"short={tmp_path / 'short'}", f"long={tmp_path / 'long'}", "--num-beams", "2",
                 "--text", sources[0], "--text", sources[1]]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == [{"facts": s, "generated": {"short": expected["short"][i], "long": expected["long"][i]}} for i, s in enumerate(sources)]
    assert expected["short"] != expected["long"]


def test_generate_and_predict_refuse_each_others_artifacts_before_loading_a_model(tokenizer_dir, tmp_path, capsys):
    from conftest import make_backbone, toy_task
    from suffixtune import Classifier, Generator
    from suffixtune.tasks import Task

    backbone, tokenizer = make_backbone("gpt2", tokenizer_dir)  # recorded as "tiny-gpt2-seed0": no such model to load
    Classifier.build(backbone, tokenizer, toy_task(), "suffix").save_pretrained(tmp_path / "classifier")
    task = Task(name="describe", kind="generation", text_columns=("text",), target_column="target", label_names=None)
    Generator.build(backbone, tokenizer, task, "suffix").save_pretrained(tmp_path / "writer")
    assert main(["generate", str(tmp_path / "classifier"), "--text", "a"]) == 2
    error = capsys.readouterr().err
    assert "classifier is a classification artifact (task 'toy2'), not a generation one; use `suffixtune predict`" in error
    assert main(["predict", str(tmp_path / "writer"), "--text", "a"]) == 2
    assert "writer is a generation artifact (task 'describe'), not a classification one; use `suffixtune generate`" in capsys.readouterr().err
