"""Every `suffixtune` command in the README parses with the real parser, so the README cannot drift from the code.

Each command runs through `main` up to the point where it would start working (training, loading an
artifact, reading a sweep file), which is replaced by a stop; a flag the parser does not know, or a value it
refuses, fails the test. Lines with `...` for left-out flags are fragments, not commands, and are left out.
The quick ones (`eval`, `predict`) and the Python snippets also run end to end on the tiny model.
"""

import argparse
import json
import re
import shlex
from pathlib import Path

import pytest

from suffixtune.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands(text: str) -> list[tuple[str, str | None]]:
    """(command, what `echo '...' |` pipes into it) for the `suffixtune` commands of the README's bash blocks:
    continuation lines joined, comments and environment assignments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            *piped, line = re.sub(r"\s+#.*$", "", line).split("|")
            line = re.sub(r"^([A-Z_]+=\S+\s+)+", "", line.strip())
            if line.startswith("suffixtune ") and "..." not in shlex.split(line):
                commands.append((line, shlex.split(piped[0])[1] if piped else None))
    return commands


class Parsed(BaseException):
    """Raised where the command would start its work: its arguments were accepted."""


def stop(*args, **kwargs):
    raise Parsed


def parse_then_stop(parser: argparse.ArgumentParser, args=None, namespace=None):
    PARSE_ARGS(parser, args, namespace)  # exits 2 on a flag or value it refuses
    raise Parsed


PARSE_ARGS = argparse.ArgumentParser.parse_args


COMMANDS = [command for command, _ in readme_commands(README.read_text())]


def test_the_readme_has_the_commands_a_newcomer_runs():
    verbs = {shlex.split(command)[1] for command in COMMANDS}
    assert verbs == {"train", "eval", "predict", "generate", "serve", "sweep", "results", "report", "inspect"}
    assert len(COMMANDS) >= 15


@pytest.mark.parametrize("command", COMMANDS)
def test_a_readme_command_parses(command, monkeypatch, capsys):
    import suffixtune.training

    monkeypatch.setattr("transformers.training_args.is_torch_bf16_gpu_available", lambda: True)  # the GPU lines
    monkeypatch.setattr(suffixtune.training, "train", stop)  # after train's own check of leftover flags
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)  # every other command
    with pytest.raises(Parsed):
        main(shlex.split(command)[1:])
    assert "error" not in capsys.readouterr().err


@pytest.mark.slow
def test_the_readme_python_runs_on_the_tiny_model(tiny_model_dir, tmp_path, monkeypatch):
    single, generation, multitask = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    monkeypatch.chdir(tmp_path)
    built, loaded = single.replace('"smollm2-135m"', repr(str(tiny_model_dir))).split("classifier = Classifier.from_pretrained")
    namespace: dict = {}
    exec(built, namespace)
    namespace["classifier"].save_pretrained("runs/sst2-suffix")  # the README loads artifacts trained before
    exec("classifier = Classifier.from_pretrained" + loaded, namespace)
    (prediction,) = namespace["classifier"].predict(["A gripping film."])
    assert prediction["label"] in ("negative", "positive") and set(prediction["probabilities"]) == {"negative", "positive"}

    from suffixtune import Classifier, get_task

    Classifier.build(namespace["backbone"], namespace["tokenizer"], get_task("sms_spam"), method="suffix").save_pretrained("runs/sms-suffix")
    exec(multitask, namespace)
    (answer,) = namespace["multitask"].classify(["WIN a FREE prize now"])
    assert set(answer) == {"sms_spam", "sst2"} and answer["sms_spam"]["label"] in ("ham", "spam")

    built, loaded = generation.replace('"smollm2-135m"', repr(str(tiny_model_dir))).split("generator = Generator.from_pretrained")
    exec(built, namespace)
    namespace["generator"].save_pretrained("runs/e2e-suffix")
    exec("generator = Generator.from_pretrained" + loaded, namespace)
    (written,) = namespace["generator"].generate([{"mr": "name[The Eagle], food[French]"}])
    assert isinstance(written, str)


@pytest.mark.slow
def test_the_readme_eval_and_predict_commands_run_on_the_tiny_model(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import io

    from conftest import DATA_DIR
    from suffixtune import Classifier, Generator, get_task, load_backbone
    from suffixtune.methods.soft_prompt import SoftPromptConfig

    backbone, tokenizer = load_backbone(str(tiny_model_dir))
    monkeypatch.chdir(tmp_path)
    artifacts = {"sst2-suffix": ("sst2", "suffix"), "rte-suffix": ("rte", "suffix"), "sms-suffix": ("sms_spam", "suffix"),
                 "sms-head": ("sms_spam", "head"), "sms-lora": ("sms_spam", "lora")}  # the runs the README trained before
    Generator.build(backbone, tokenizer, get_task("e2e"), method="deep-prefix").save_pretrained("runs/e2e-deep-prefix")
    for length in (5, 10):
        config = SoftPromptConfig(prompt_length=length)
        Generator.build(backbone, tokenizer, get_task("e2e"), "suffix", config).save_pretrained(f"runs/e2e-suffix-{length}")
    for name, (task, method) in artifacts.items():  # lora last: it changes the backbone in place
        Classifier.build(backbone, tokenizer, get_task(task), method=method).save_pretrained(f"runs/{name}")
    quick = [(c, stdin) for c, stdin in readme_commands(README.read_text()) if shlex.split(c)[1] in ("eval", "predict", "generate")]
    assert len(quick) == 10
    for command, stdin in quick:
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO((stdin or "").encode())))
        shortened = " --max_eval_samples 2" if " eval " in f" {command} " and "e2e" in command else ""  # not all 630 test MRs
        assert main(shlex.split(command.replace("../shared/data", str(DATA_DIR)) + shortened)[1:]) == 0, command
        answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        if " eval " in f" {command} " and "e2e" in command:
            assert len(answers) == 1 and 0 <= answers[0]["bleu"] <= 100, command
        elif " eval " in f" {command} ":
            assert len(answers) == 1 and 0 <= answers[0]["accuracy"] <= 1, command
        elif " generate " in f" {command} " and "p5=" in command:
            assert len(answers) == 1 and set(answers[0]["generated"]) == {"p5", "p10"}, command
        elif " generate " in f" {command} ":
            assert len(answers) == 1 and isinstance(answers[0]["generated"], str), command
        else:
            texts = re.findall(r'--text "([^"]+)"', command) or [stdin]
            assert len(answers) == len(texts) and all("label" in a or "tasks" in a for a in answers), command
