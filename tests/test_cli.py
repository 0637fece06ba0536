"""The CLI end to end on a tiny local model: files written, training works, bad input is refused early."""

import json
import math
import re

import pytest
import torch
from transformers import TrainerControl, TrainerState

from conftest import DATA_DIR, write_toy_csv
from suffixtune.cli import main
from suffixtune.training.trainer import DivergenceCallback


def train_args(tiny_model_dir, tmp_path, *extra, method="suffix"):
    train = write_toy_csv(tmp_path / "train.csv", rows=64, seed=0)
    validation = write_toy_csv(tmp_path / "validation.csv", rows=32, seed=1)
    prompt = ["--prompt_length", "4"] if method in ("suffix", "prefix", "deep-prefix") else []
    return [
        "train", "--model", str(tiny_model_dir), "--train", str(train), "--validation", str(validation),
        "--text_column", "text", "--output", str(tmp_path / "run"), "--method", method, *prompt,
        "--per_device_train_batch_size", "8", "--disable_tqdm", "true", "--seed", "0", *extra,
    ]


@pytest.mark.slow
def test_train_eval_predict(tiny_model_dir, tmp_path, capsys):
    assert main(train_args(tiny_model_dir, tmp_path, "--num_train_epochs", "4", "--learning_rate", "3e-2")) == 0
    printed = capsys.readouterr().out.splitlines()
    assert not any(line.startswith("{'") for line in printed)  # Trainer's raw log dicts
    assert re.fullmatch(r"step 8/32, epoch 1\.00: eval loss [0-9.]+, eval accuracy [0-9.]+", printed[0])
    assert re.fullmatch(r"step 10/32, epoch 1\.25: loss [0-9.]+, grad norm [0-9.]+, learning rate [0-9.e-]+", printed[1])
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir() if p.is_file()} == {
        "metrics.json", "suffixtune_config.json", "suffixtune_model.safetensors", "suffixtune_run_settings.json"}
    for checkpoint in run.glob("checkpoint-*"):
        assert not (checkpoint / "model.safetensors").exists()  # never a copy of the backbone
        assert (checkpoint / "suffixtune_model.safetensors").stat().st_size < 10_000
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "ok"
    losses = [epoch["eval_loss"] for epoch in record["epochs"]]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert record["eval"]["accuracy"] >= 0.9
    assert record["did_not_learn"] is None
    diagnostics = {"loss", "pooled_norm", "prompt_norm", "head_grad_norm", "method_grad_norm"}
    assert len(record["train_log"]) == 3 and all(diagnostics <= set(entry) for entry in record["train_log"])  # steps 10, 20, 30
    assert record["trainable_parameters"] == 4 * 32 + 32 * 2 + 2
    assert record["config"]["training"]["learning_rate"] == 3e-2
    assert record["train_samples_per_second"] > 0

    capsys.readouterr()
    assert main(["eval", str(run), "--validation", str(tmp_path / "validation.csv")]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["accuracy"] == pytest.approx(record["eval"]["accuracy"])

    assert main(["predict", str(run), "--text", "superb lovely wonderful", "--text", "awful boring"]) == 0  # the training words
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["label"] for line in lines] == ["positive", "negative"]
    assert lines[0]["text"] == "superb lovely wonderful"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "learning_rate", "trained_tensors"),
    [("deep-prefix", "3e-2", {"method.prefix"}), ("lora", "3e-2", {"c_attn.lora_A", "c_attn.lora_B"}),
     ("last-blocks", "3e-3", {"transformer.h.1.", "transformer.ln_f."}), ("head", "3e-2", set())],
)
def test_every_method_trains_through_the_cli(tiny_model_dir, tmp_path, capsys, method, learning_rate, trained_tensors):
    from safetensors import safe_open

    extra = ["--num_train_epochs", "4", "--learning_rate", learning_rate, "--pooling", "mean"]
    assert main(train_args(tiny_model_dir, tmp_path, *extra, method=method)) == 0
    run = tmp_path / "run"
    record = json.loads((run / "metrics.json").read_text())
    losses = [epoch["eval_loss"] for epoch in record["epochs"]]
    assert record["status"] == "ok" and record["pooling"] == "mean" and losses[-1] < losses[0]
    with safe_open(run / "suffixtune_model.safetensors", "pt") as saved:
        names = set(saved.keys()) - {"head.linear.weight", "head.linear.bias"}
        assert {name for name in names if any(part in name for part in trained_tensors)} == names and len(names) >= len(trained_tensors)
        assert sum(saved.get_tensor(name).numel() for name in saved.keys()) == record["trainable_parameters"]
    capsys.readouterr()
    assert main(["eval", str(run), "--validation", str(tmp_path / "validation.csv")]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(record["eval"]["accuracy"])


@pytest.mark.slow
@pytest.mark.parametrize(("reparam", "learning_rate"), [("false", 3e-3), ("true", 3e-4)])
def test_deep_prefix_through_its_mlp_trains_at_a_tenth_of_the_rate_by_default(tiny_model_dir, tmp_path, reparam, learning_rate):
    assert main(train_args(tiny_model_dir, tmp_path, "--reparam", reparam, "--max_steps", "1", method="deep-prefix")) == 0
    training = json.loads((tmp_path / "run" / "metrics.json").read_text())["config"]["training"]
    assert training["learning_rate"] == learning_rate and training["head_learning_rate"] == learning_rate


@pytest.mark.slow
def test_a_seed_gives_the_same_run_twice_and_another_seed_another(tiny_model_dir, tmp_path):
    """Sweeps compare seeds: a rerun of one seed must reproduce it to the bit, or seed spread hides noise."""
    from safetensors.torch import load_file

    def trained(name, seed):
        extra = ["--num_train_epochs", "2", "--output", str(tmp_path / name), "--seed", seed]
        assert main(train_args(tiny_model_dir, tmp_path, *extra)) == 0
        record = json.loads((tmp_path / name / "metrics.json").read_text())
        return load_file(tmp_path / name / "suffixtune_model.safetensors"), [e["eval_loss"] for e in record["epochs"]]

    first, again, other = trained("first", "0"), trained("again", "0"), trained("other", "1")
    assert first[1] == again[1] != other[1]
    assert first[0].keys() == again[0].keys() and all(torch.equal(first[0][name], again[0][name]) for name in first[0])
    assert not torch.equal(first[0]["method.prompt"], other[0]["method.prompt"])


@pytest.mark.slow
def test_a_run_directory_resumes_only_its_own_run(tiny_model_dir, tmp_path, caplog, capsys):
    import shutil

    def run_main(*extra, max_steps="6"):
        steps = ["--max_steps", max_steps, "--save_strategy", "steps", "--save_steps", "2", "--eval_strategy", "steps",
                 "--eval_steps", "2", "--save_total_limit", "5"]
        return main(train_args(tiny_model_dir, tmp_path, *steps, *extra))

    run = tmp_path / "run"
    assert run_main() == 0
    shutil.rmtree(run / "checkpoint-6")
    (run / "metrics.json").unlink()  # as if killed after the checkpoint of step 4
    assert run_main() == 0
    assert "resuming from checkpoint" in caplog.text and "checkpoint-4" in caplog.text
    record = json.loads((run / "metrics.json").read_text())
    assert [epoch["step"] for epoch in record["epochs"]] == [2, 4, 6] and record["resumed_from"].endswith("checkpoint-4")

    capsys.readouterr()
    assert run_main("--learning_rate", "1e-2") == 2
    error = capsys.readouterr().err
    assert ("holds a run (last checkpoint checkpoint-6) with other settings: --head_learning_rate 0.003 (stored) vs 0.01 (now), "
            "--learning_rate 0.003 (stored) vs 0.01 (now).") in error  # the head's rate follows --learning_rate
    assert "--overwrite_output_dir true" in error and "--resume_from_checkpoint" in error
    assert run_main("--prompt_length", "6") == 2
    assert "--prompt_length 4 (stored) vs 6 (now)" in capsys.readouterr().err
    assert run_main("--prompt_length", "6", "--resume_from_checkpoint", str(run / "checkpoint-6")) == 2
    assert "other settings of the model, data or method: --prompt_length 4 (stored) vs 6 (now)" in capsys.readouterr().err
    assert json.loads((run / "metrics.json").read_text()) == record  # refused runs touch nothing

    assert run_main("--resume_from_checkpoint", str(run / "checkpoint-6"), max_steps="8") == 0  # more steps, on purpose
    record = json.loads((run / "metrics.json").read_text())
    assert [epoch["step"] for epoch in record["epochs"]] == [2, 4, 6, 8]
    assert record["resumed_with_changes"] == [{"flag": "max_steps", "stored": 6, "now": 8}]

    assert run_main("--learning_rate", "1e-2", "--overwrite_output_dir", "true") == 0
    record = json.loads((run / "metrics.json").read_text())
    assert record["resumed_from"] is None and record["config"]["training"]["learning_rate"] == 1e-2
    assert [epoch["step"] for epoch in record["epochs"]] == [2, 4, 6] and not (run / "checkpoint-8").exists()


@pytest.mark.slow
def test_speed_counts_the_tokens_trained_in_this_process(tiny_model_dir, tmp_path):
    import csv

    from transformers import AutoTokenizer

    def run_main(*extra):
        steps = ["--train_sampling_strategy", "sequential", "--save_strategy", "steps", "--save_steps", "2", "--eval_strategy", "no",
                 "--load_best_model_at_end", "false"]
        assert main(train_args(tiny_model_dir, tmp_path, *steps, *extra)) == 0
        return json.loads((tmp_path / "run" / "metrics.json").read_text())

    record = run_main("--max_steps", "2")
    texts = [row["text"] for row in csv.DictReader((tmp_path / "train.csv").open())]
    lengths = [len(ids) for ids in AutoTokenizer.from_pretrained(tiny_model_dir)(texts).input_ids]
    assert (record["train_samples"], record["train_tokens"]) == (16, sum(lengths[:16]))  # batches 1-2, in file order
    assert record["train_tokens_per_second"] == pytest.approx(record["train_tokens"] / record["train_runtime_s"])
    record = run_main("--max_steps", "4", "--resume_from_checkpoint", str(tmp_path / "run" / "checkpoint-2"))
    assert (record["train_samples"], record["train_tokens"]) == (16, sum(lengths[16:32]))  # only what this process trained


def test_collapsed_run_is_reported_failed(tiny_model_dir, tmp_path, capsys):
    same = tmp_path / "same.csv"
    same.write_text("text,label\n" + "".join(f"one and the same text,{i % 2}\n" for i in range(16)))
    args = ["train", "--model", str(tiny_model_dir), "--train", str(same), "--validation", str(same), "--text_column", "text",
            "--output", str(tmp_path / "run"), "--max_steps", "1", "--disable_tqdm", "true"]
    assert main(args) == 3
    assert "predictions collapsed to class" in capsys.readouterr().err
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "failed" and "collapsed" in record["failure"]


def test_divergence_stops_training():
    callback, control = DivergenceCallback(), TrainerControl()
    callback.on_log(None, TrainerState(global_step=7), control, logs={"loss": 0.7, "grad_norm": 1.0})
    assert callback.failure is None and not control.should_training_stop
    callback.on_log(None, TrainerState(global_step=8), control, logs={"loss": math.nan})
    assert callback.failure == "loss became nan at step 8" and control.should_training_stop


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "sufix"], "unknown method 'sufix' (did you mean 'suffix'?)"),
        (["--head", "verbalizer", "--regression", "true"], "--head verbalizer needs a classification task"),
        (["--head", "verbalizer"], "needs one label word per class (2), got None; pass --label_words"),
        (["--prompt_length", "0"], "--prompt_length must be at least 1"),
        (["--method", "lora", "--prompt_length", "4"], "--prompt_length (an option of --method suffix, prefix, deep-prefix"),
        (["--method", "lora", "--lora_rank", "4"], "unrecognized arguments: --lora_rank (did you mean --lora_r?)"),
        (["--load_best_model_at_end", "true", "--eval_strategy", "steps", "--save_strategy", "epoch"],
         "error: --load_best_model_at_end requires the save and eval strategy to match"),  # TrainingArguments' own check
        (["--method", "head", "--head", "verbalizer", "--label_words", " no", " yes"], "has nothing to train; use --head linear"),
        (["--method", "full", "--dtype", "bfloat16"], "must be float32 for the optimizer; use --dtype float32 with --bf16"),
        (["--method", "deep-prefix", "--activation_checkpointing", "true"], "cannot train with activation (gradient) checkpointing"),
        (["--method", "last-blocks", "--blocks", "0"], "--blocks must be at least 1"),
        (["--per_device_train_batch_size", "0"], "error: --per_device_train_batch_size must be at least 1, got 0"),
        (["--gradient_accumulation_steps", "0"], "error: --gradient_accumulation_steps must be at least 1, got 0"),
        (["--learning_rate", "-1"], "error: --learning_rate must be positive, got -1"),  # torch's ValueError before
        (["--seed", "-1"], "error: --seed must be from 0 to 2**32 - 1"),  # numpy's ValueError before
        (["--max_train_samples", "0"], "error: --max_train_samples must be at least 1 (a row count), got 0"),  # IndexError
        (["--num_train_epochs", "0"], "error: --num_train_epochs 0 trains nothing: give a positive number of epochs or --max_steps"),
    ],
)
def test_bad_options_refused_before_model_loads(tmp_path, capsys, extra, message):
    train = write_toy_csv(tmp_path / "train.csv")
    args = ["train", "--model", str(tmp_path / "no-such-model"), "--train", str(train), "--validation", str(train),
            "--text_column", "text", "--output", str(tmp_path / "run"), *extra]
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_qnli_is_eval_only_here(tmp_path, capsys):
    args = ["train", "--model", str(tmp_path / "no-such-model"), "--task", "qnli", "--data", str(DATA_DIR / "qnli"),
            "--output", str(tmp_path / "run")]
    assert main(args) == 2
    assert "no train file for task 'qnli'" in capsys.readouterr().err


@pytest.mark.slow
def test_a_builtin_task_artifact_scores_a_file_with_the_tasks_own_column_names(tiny_model_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", str(tiny_model_dir), "--task", "sms_spam", "--data", str(DATA_DIR / "sms_spam"),
                 "--max_train_samples", "16", "--max_steps", "2", "--prompt_length", "2", "--output", str(run),
                 "--disable_tqdm", "true"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--validation", str(DATA_DIR / "sms_spam" / "test.csv")]) == 0  # columns Label, Text
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["rows"] == 300 and evaluated["source"].endswith("test.csv")  # PROVENANCE.md: 300 test rows


def test_a_task_the_hub_cannot_provide_asks_for_its_files(tmp_path, capsys, monkeypatch):
    import datasets

    def offline(*args, **kwargs):  # what datasets raises without a network and without a cached copy
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    assert main(["train", "--model", str(tmp_path / "no-such-model"), "--task", "sst2", "--output", str(tmp_path / "run")]) == 2
    assert ("error: task 'sst2': the Hugging Face hub could not provide nyu-mll/glue/sst2 (Couldn't reach 'nyu-mll/glue' "
            "on the Hub (LocalEntryNotFoundError)); pass --data DIR") in capsys.readouterr().err


def test_predict_refuses_bad_artifact_dir(tmp_path, capsys):
    assert main(["predict", str(tmp_path), "--text", "hi"]) == 2
    assert "not a suffixtune artifact" in capsys.readouterr().err


def test_predict_pairs_need_jsonl(tmp_path, capsys, backbone):
    from suffixtune import Classifier, get_task

    model, tokenizer = backbone
    Classifier.build(model, tokenizer, get_task("rte")).save_pretrained(tmp_path)
    assert main(["predict", str(tmp_path), "--text", "only one side"]) == 2
    assert 'classifies text pairs; pass JSONL lines like {"sentence1": "...", "sentence2": "..."}' in capsys.readouterr().err


def test_predict_reads_jsonl_from_stdin(tmp_path, capsys, monkeypatch, tiny_model_dir):
    import io

    from suffixtune import Classifier, get_task, load_backbone

    model, tokenizer = load_backbone(str(tiny_model_dir))
    Classifier.build(model, tokenizer, get_task("rte")).save_pretrained(tmp_path)
    lines = '{"sentence1": "A man sleeps.", "sentence2": "Someone rests."}\n\n"not a pair"\n'
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    assert main(["predict", str(tmp_path)]) == 2  # line 3 lacks the fields; nothing is printed for line 1 either
    assert "stdin line 3: needs string field(s) ['sentence2']" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO(lines.split("\n")[0]))
    assert main(["predict", str(tmp_path)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["sentence1"] == "A man sleeps." and set(result["probabilities"]) == {"entailment", "not_entailment"}


def test_an_unknown_flag_does_not_blame_the_methods_own_options(tmp_path, capsys):
    train = write_toy_csv(tmp_path / "train.csv")
    args = ["train", "--model", str(tmp_path / "no-such-model"), "--train", str(train), "--validation", str(train),
            "--text_column", "text", "--output", str(tmp_path / "run"), "--prompt_length", "4", "--no_such_flag", "1"]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "unrecognized arguments: --no_such_flag;" in error and "--prompt_length" not in error


TRAIN_MISTAKES = [
    ["--output", "run", "--learnin_rate", "0.1"],
    ["--output", "run", "--method", "lora", "--prompt_length", "4"],
    ["--output", "run", "--no_such_flag", "1"],
]


@pytest.mark.parametrize("mistake", TRAIN_MISTAKES)
def test_train_flags_kept_from_the_first_parse_refuse_as_the_parser_does(tmp_path, monkeypatch, capsys, mistake):
    monkeypatch.setenv("SUFFIXTUNE_CACHE", str(tmp_path))
    assert main(["train", *mistake]) == 2  # nothing kept yet: the full parser answers, and its flags are kept
    from_parser = capsys.readouterr().err
    assert list((tmp_path / "train-flags").iterdir())
    assert main(["train", *mistake]) == 2
    assert capsys.readouterr().err == from_parser


@pytest.mark.slow
def test_train_help_and_typos_answer_without_importing_torch(tmp_path, monkeypatch, capsys):
    import subprocess
    import sys

    from suffixtune.training import train_parser

    monkeypatch.setenv("SUFFIXTUNE_CACHE", str(tmp_path))
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert capsys.readouterr().out == train_parser().format_help()
    probe = ("import sys; from suffixtune.cli import main; code = main(sys.argv[1:]); "
             "print(code, 'torch' in sys.modules, 'transformers' in sys.modules)")
    helped = subprocess.run([sys.executable, "-c", probe, "train", "--help"], capture_output=True, text=True, check=True)
    assert helped.stdout == train_parser().format_help() + "0 False False\n"
    typo = subprocess.run([sys.executable, "-c", probe, *["train", *TRAIN_MISTAKES[0]]], capture_output=True, text=True)
    assert typo.stdout == "2 False False\n" and "--learnin_rate (did you mean --learning_rate?)" in typo.stderr


@pytest.mark.slow
def test_artifacts_record_where_the_model_is_and_load_onto_a_copy(tiny_model_dir, tokenizer_dir, tmp_path, monkeypatch, capsys):
    import shutil

    from conftest import make_backbone

    monkeypatch.chdir(tiny_model_dir.parent)
    args = train_args(tiny_model_dir, tmp_path, "--max_steps", "2")
    args[args.index("--model") + 1] = tiny_model_dir.name  # a relative path, as a user types it
    assert main(args) == 0
    run = tmp_path / "run"
    assert json.loads((run / "suffixtune_config.json").read_text())["base_model"] == str(tiny_model_dir.resolve())
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["predict", str(run), "--text", "lovely"]) == 0  # from another directory
    expected = json.loads(capsys.readouterr().out)

    copy = shutil.copytree(tiny_model_dir, tmp_path / "moved-model")
    assert main(["predict", str(run), "--model", str(copy), "--text", "lovely"]) == 0
    assert json.loads(capsys.readouterr().out) == expected
    other, tokenizer = make_backbone("gpt2", tokenizer_dir, seed=5)
    other.save_pretrained(tmp_path / "other-model")
    tokenizer.save_pretrained(tmp_path / "other-model")
    assert main(["eval", str(run), "--model", str(tmp_path / "other-model"), "--validation", str(tmp_path / "validation.csv")]) == 2
    assert "was trained on base model" in capsys.readouterr().err


def test_bad_outputs_ports_and_stdin_are_named(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import io
    import types

    from suffixtune import cli
    from suffixtune.errors import ConfigError
    from suffixtune.training.resume import run_directory_lock

    taken = tmp_path / "taken.txt"
    taken.write_text("notes")
    args = train_args(tiny_model_dir, tmp_path, "--max_steps", "1")
    args[args.index("--output") + 1] = str(taken)
    assert main(args) == 2
    assert f"--output {taken} is a file; a run needs a directory" in capsys.readouterr().err

    busy = types.SimpleNamespace(output_dir=str(tmp_path / "run"), process_index=0)
    with run_directory_lock(busy):
        assert main(train_args(tiny_model_dir, tmp_path, "--max_steps", "1")) == 2
        assert "another suffixtune train is writing there now" in capsys.readouterr().err
        with pytest.raises(ConfigError, match="another suffixtune train"), run_directory_lock(busy):
            pass
    with run_directory_lock(busy):  # released when the first holder is done
        pass

    with pytest.raises(SystemExit):
        main(["serve", str(tmp_path), "--port", "70000"])
    assert "70000 is not a TCP port; use 1 to 65535" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report", "--storage", str(tmp_path), "--out", str(taken)])
    assert f"--out {taken} is a file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["inspect", str(tmp_path), "--top_k", "0"])  # an IndexError before
    assert "argument --top-k/--top_k: 0 must be at least 1" in capsys.readouterr().err

    assert main(train_args(tiny_model_dir, tmp_path, "--max_steps", "1")) == 0
    for stdin, message in [(b"", "no texts: pass --text TEXT, or JSON lines on stdin"),
                           (b'{"text": "fine"}\n"caf\xe9"\n', "stdin line 2: not UTF-8 (byte 0xe9 at column 5)"),
                           (b'{"text": "fine"}\n{"text": "\\ud800 great"}\n',  # a tokenizer TypeError before
                            "text 2, field 'text': character 0 ('\\ud800') is a lone surrogate, not text")]:
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        assert main(["predict", str(tmp_path / "run")]) == 2
        assert message in capsys.readouterr().err

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "train", interrupted)
    assert main(["train", "--output", "runs/x"]) == 130
    assert "interrupted; run the same command again to resume from the last checkpoint in runs/x" in capsys.readouterr().err


def test_help_version_and_unknown_commands_answer_without_loading_torch(capsys):
    import subprocess
    import sys

    assert main(["--help"]) == 0 and "train    train a classifier" in capsys.readouterr().out
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("suffixtune 0.")
    assert main(["trian"]) == 2
    assert "unknown command 'trian'; did you mean 'train'?" in capsys.readouterr().err
    assert main(["train", "--task", "sst2"]) == 2  # transformers would write to ./trainer_output
    assert "pass --output DIR: the run directory" in capsys.readouterr().err
    script = ("import sys\nfrom suffixtune.cli import main\n"
              "main(['--help'])\nmain(['bogus'])\n"
              "for argv in (['serve', 'x', '--port', '99999'], ['predict'], ['eval'], ['report']):\n"
              "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
              "print(sorted(m for m in ('torch', 'transformers', 'fastapi', 'optuna', 'peft') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_run_directory_rules_without_training(tmp_path):
    import types

    from suffixtune.training.resume import SETTINGS_NAME, prepare_run_directory, write_settings

    settings = {"training": {"learning_rate": 0.003}, "method": {"method": "suffix"}}

    def args(**options):
        return types.SimpleNamespace(**{"output_dir": str(tmp_path / "run"), "resume_from_checkpoint": None,
                                        "overwrite_output_dir": False, "process_index": 0, **options})

    assert prepare_run_directory(args(), settings) == (None, [])  # a new directory
    (tmp_path / "run" / "metrics.json").write_text("{}")  # a finished run that kept no checkpoint
    assert prepare_run_directory(args(), settings) == (None, []) and (tmp_path / "run" / "metrics.json").exists()
    checkpoint = tmp_path / "run" / "checkpoint-4"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text("{}")  # killed before its settings were written into it
    assert prepare_run_directory(args(), settings) == (str(checkpoint), [])
    assert prepare_run_directory(args(resume_from_checkpoint="false"), settings) == (str(checkpoint), [])
    write_settings(checkpoint, {**settings, "training": {"learning_rate": 0.01}})
    assert prepare_run_directory(args(resume_from_checkpoint=str(checkpoint)), settings)[1] == [
        ("training", "learning_rate", 0.01, 0.003)]
    assert (tmp_path / "run" / SETTINGS_NAME).exists()
