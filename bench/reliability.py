"""Bad input, tried as a user would: each case runs `suffixtune` in its own process on a tiny local GPT-2.

Every case states what it gives and what it expects (a clear error, exit 2; or success, exit 0). The verdict:
`clear` (exit 2, one line naming the problem, no traceback), `crash` (a traceback), `ok` (an expected success),
`unexpected` (any other exit). Writes a Markdown table with the totals.

    python bench/reliability.py --out docs/reliability-cases.md
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"


def tiny_model(directory: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    tokenizer = GPT2TokenizerFast.from_pretrained(SHARED / "models" / "gpt2-tokenizer")
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def files(root: Path) -> dict[str, Path]:
    rows = "".join(f"{'great fun' if i % 2 else 'dull and slow'} {i},{'pos' if i % 2 else 'neg'}\n" for i in range(32))
    made = {
        "train": "text,label\n" + rows, "validation": "text,label\n" + rows,
        "latin1": None, "broken.jsonl": '{"text": "fine", "label": "pos"}\n{"text": "oops", "label": \n',
        "comma": "text,label\nfine,pos\nslow, but fine,neg\n", "numbers.jsonl": '{"text": 5, "label": "pos"}\n{"text": "a", "label": "neg"}\n',
        "empty-label": "text,label\na,pos\nb,\nc,neg\n", "header-again": "text,label\na,pos\ntext,label\nc,neg\n",
        "floats": "text,label\n" + "".join(f"t{i},{i / 10}\n" for i in range(20)),
        "ints-train": "text,label\na,1\nb,2\nc,1\n", "ints-validation": "text,label\na,0\nb,1\n",
        "no-text": "sentence,label\na,pos\nb,neg\n", "bom.jsonl": None,
        "surrogate.jsonl": '{"text": "fine", "label": "pos"}\n{"text": "\\ud800 great", "label": "neg"}\n',
        "blank": "text,label\na,pos\n   ,neg\nc,neg\n", "empty": "", "header-only": "text,label\n",
        "unknown-label": "text,label\na,maybe\nb,pos\n", "bad.yaml": "name: x\ngrid: [1,\n",
        "far-key.yaml": "name: y\ngrid:\n  zzz: [1]\nfixed:\n  task: sst2\n",
    }
    paths = {}
    for name, text in made.items():
        path = root / (name if "." in name else f"{name}.csv")
        if name == "latin1":
            path.write_bytes("text,label\nfine,pos\ncaf\u00e9,neg\n".encode("latin-1"))
        elif name == "bom.jsonl":
            lines = (json.dumps({"text": f"{'great fun' if i % 2 else 'dull and slow'} {i}", "label": "pos" if i % 2 else "neg"})
                     for i in range(32))
            path.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode())
        else:
            path.write_text(text)
        paths[name] = path
    (root / "a-directory.csv").mkdir()
    paths["directory"] = root / "a-directory.csv"
    (root / "taken.txt").write_text("notes")
    paths["file"] = root / "taken.txt"
    (root / "evil.yaml").write_text("name: ../../evil\ngrid:\n  seed: [0]\nfixed:\n  task: sst2\n")
    paths["evil"] = root / "evil.yaml"
    return paths


def cases(root: Path, model: Path, f: dict[str, Path]) -> list[tuple[str, str, list[str], bytes | None, int]]:
    """(kind, what is given, argv, stdin, expected exit)."""
    def train(*extra, train=f["train"], validation=f["validation"], output="run"):
        return ["train", "--model", str(model), "--train", str(train), "--validation", str(validation), "--text_column", "text",
                "--output", str(root / output), "--max_steps", "2", "--disable_tqdm", "true", "--prompt_length", "4", *extra]

    run, learns = root / "run", ("--max_steps", "24", "--learning_rate", "0.03", "--per_device_train_batch_size", "8")
    return [
        ("control", "a good run", train(*learns), None, 0),
        ("data", "Latin-1 CSV", train(train=f["latin1"]), None, 2),
        ("data", "JSONL with a broken line", train(train=f["broken.jsonl"]), None, 2),
        ("data", "JSONL starting with a BOM", train(*learns, train=f["bom.jsonl"], validation=f["bom.jsonl"], output="bom"), None, 0),
        ("data", "CSV row with an unquoted comma", train(train=f["comma"]), None, 2),
        ("data", "a directory as --train", train(train=f["directory"]), None, 2),
        ("data", "a number in the text column", train(validation=f["numbers.jsonl"], output="n"), None, 2),
        ("data", "an empty label cell", train(train=f["empty-label"], output="e"), None, 2),
        ("data", "the header repeated as a row", train(train=f["header-again"], output="h"), None, 2),
        ("data", "fractional labels without --regression", train(train=f["floats"], output="f"), None, 2),
        ("data", "validation label 0 against classes {1, 2}", train(train=f["ints-train"], validation=f["ints-validation"], output="i"), None, 2),
        ("data", "--text_column the file lacks", train(train=f["no-text"], output="t"), None, 2),
        ("data", "a lone surrogate (\\ud800) in a JSONL text", train(train=f["surrogate.jsonl"], output="s"), None, 2),
        ("data", "a whitespace-only text", train(train=f["blank"], output="b"), None, 2),
        ("data", "an empty file", train(train=f["empty"], output="b"), None, 2),
        ("data", "a header and no rows", train(train=f["header-only"], output="b"), None, 2),
        ("data", "--train naming no file", train(train=root / "missing.csv", output="b"), None, 2),
        ("data", "--label_column the file lacks", train("--label_column", "lab", output="b"), None, 2),
        ("data", "a GLUE task without --data, offline", ["train", "--model", str(model), "--task", "sst2", "--output", "g"], None, 2),
        ("option", "--model naming nothing", train(output="b") + ["--model", "no-such-model"], None, 2),
        ("option", "--method bogus", train("--method", "bogus", output="b"), None, 2),
        ("option", "--learning_rate abc", train("--learning_rate", "abc", output="b"), None, 2),
        ("option", "--learning_rate -1", train("--learning_rate", "-1", output="b"), None, 2),
        ("option", "--seed -1", train("--seed", "-1", output="b"), None, 2),
        ("option", "--per_device_train_batch_size 0", train("--per_device_train_batch_size", "0", output="b"), None, 2),
        ("option", "--gradient_accumulation_steps 0", train("--gradient_accumulation_steps", "0", output="b"), None, 2),
        ("option", "--num_train_epochs 0 (no --max_steps)", train("--max_steps", "-1", "--num_train_epochs", "0", output="b"), None, 2),
        ("option", "--max_train_samples 0", train("--max_train_samples", "0", output="b"), None, 2),
        ("option", "--bf16 true on a CPU", train("--bf16", "true", output="b"), None, 2),
        ("option", "--version", ["--version"], None, 0),
        ("option", "a sweep file that is not YAML", ["sweep", "plan", str(f["bad.yaml"])], None, 2),
        ("option", "a sweep setting far from any flag", ["sweep", "plan", str(f["far-key.yaml"])], None, 2),
        ("option", "--prompt_length 100000", train("--prompt_length", "100000", output="p1"), None, 2),
        ("option", "--prompt_length 128 on a 128-position model", train("--prompt_length", "128", output="p2"), None, 2),
        ("option", "--max_length 0", train("--max_length", "0", output="p3"), None, 2),
        ("option", "--prompt_length 0", train("--prompt_length", "0", output="p4"), None, 2),
        ("option", "--prompt_length with --method lora", train("--method", "lora", output="p5"), None, 2),
        ("option", "--output naming a file", train(output="taken.txt"), None, 2),
        ("option", "train without --output", ["train", "--task", "sst2"], None, 2),
        ("option", "unknown command", ["trian"], None, 2),
        ("option", "--help", ["--help"], None, 0),
        ("option", "serve --port 70000", ["serve", str(run), "--port", "70000"], None, 2),
        ("option", "report --out naming a file", ["report", "--storage", str(root), "--out", str(f["file"])], None, 2),
        ("option", "a sweep named ../../evil", ["sweep", "plan", str(f["evil"])], None, 2),
        ("rerun", "the same run again (resumes)", train(*learns), None, 0),
        ("rerun", "into a finished run at another learning rate", train(*learns, "--learning_rate", "0.01"), None, 2),
        ("rerun", "into a finished run at another prompt length", train(*learns, "--prompt_length", "6"), None, 2),
        ("rerun", "with --overwrite_output_dir true", train(*learns, "--seed", "1", "--overwrite_output_dir", "true"), None, 0),
        ("request", "predict with nothing on stdin", ["predict", str(run)], b"", 2),
        ("request", "predict with a non-UTF-8 byte on stdin", ["predict", str(run)], b'"caf\xe9"\n', 2),
        ("request", "predict with a lone surrogate on stdin", ["predict", str(run)], b'{"text": "\\ud800 great"}\n', 2),
        ("request", "predict --text with a non-UTF-8 byte in argv", ["predict", str(run), "--text", b"caf\xe9"], None, 2),
        ("request", "predict, a JSON line without the text field", ["predict", str(run)], b'{"txt": "hi"}\n', 2),
        ("request", "predict --batch-size 0", ["predict", str(run), "--text", "hi", "--batch-size", "0"], None, 2),
        ("request", "predict with two artifacts of one name", ["predict", f"a={run}", f"a={run}", "--text", "hi"], None, 2),
        ("request", "inspect --top_k 0", ["inspect", str(run), "--top_k", "0"], None, 2),
        ("request", "eval on labels the artifact lacks", ["eval", str(run), "--validation", str(f["unknown-label"])], None, 2),
        ("request", "predict with a directory that is no artifact", ["predict", str(root), "--text", "hi"], None, 2),
        ("request", "eval --split test of a custom-data artifact", ["eval", str(run), "--split", "test", "--data", str(root)], None, 2),
        ("artifact", "config edited: method suffix -> prefix", ["predict", "EDITED", "--text", "fine"], None, 2),
        ("artifact", "weights overwritten with NaN", ["predict", "NAN", "--text", "fine"], None, 2),
        ("artifact", "weights file cut in half", ["predict", "TRUNCATED", "--text", "fine"], None, 2),
        ("artifact", "weights file empty", ["predict", "EMPTY", "--text", "fine"], None, 2),
        ("artifact", "weights file missing", ["predict", "MISSING", "--text", "fine"], None, 2),
        ("artifact", "one bit flipped inside the tensor data", ["predict", "FLIPPED", "--text", "fine"], None, 2),
        ("artifact", "config not JSON", ["predict", "NOTJSON", "--text", "fine"], None, 2),
        ("artifact", "config without its method", ["predict", "NOMETHOD", "--text", "fine"], None, 2),
    ]


def interruptions(command: str, root: Path, model: Path, f: dict[str, Path]) -> list[tuple[str, str, subprocess.CompletedProcess, int]]:
    """A second train into a run directory while the first trains there; the first killed (SIGKILL) mid-run and
    the same command run again. The rerun must resume from the last checkpoint and finish its record."""
    output = root / "killed"
    argv = [command, "train", "--model", str(model), "--train", str(f["train"]), "--validation", str(f["validation"]),
            "--text_column", "text", "--output", str(output), "--prompt_length", "4", "--disable_tqdm", "true",
            "--max_steps", "400", "--per_device_train_batch_size", "8", "--save_strategy", "steps", "--save_steps", "20",
            "--eval_strategy", "steps", "--eval_steps", "20"]
    first = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root)
    deadline = time.monotonic() + 300
    while not list(output.glob("checkpoint-*")) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    second = subprocess.run(argv, capture_output=True, cwd=root)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = sorted(output.glob("checkpoint-*"))
    rerun = subprocess.run(argv, capture_output=True, cwd=root)
    record = output / "metrics.json"
    resumed = b"resuming from checkpoint" in rerun.stderr and record.is_file() and killed_at
    if rerun.returncode == 0 and not resumed:  # a run that started over, or wrote no record, lost what it had
        rerun = subprocess.CompletedProcess(rerun.args, 1, rerun.stdout, rerun.stderr + b"\nnot resumed: data lost")
    return [("interruption", "a second train into a directory the first is training in", second, 2),
            ("interruption", f"kill -9 mid-run (at {killed_at[-1].name if killed_at else 'no checkpoint'}), then the same command", rerun, 0)]


def damage(run: Path, root: Path) -> dict[str, str]:
    """Copies of the control run's artifact, each damaged one way."""
    import torch
    from safetensors.torch import load_file, save_file

    copies = {}
    for name in ("EDITED", "NAN", "TRUNCATED", "EMPTY", "MISSING", "FLIPPED", "NOTJSON", "NOMETHOD"):
        target = root / name.lower()
        shutil.copytree(run, target, ignore=shutil.ignore_patterns("checkpoint-*"))
        copies[name] = str(target)
    config = json.loads((root / "edited" / "suffixtune_config.json").read_text())
    (root / "edited" / "suffixtune_config.json").write_text(json.dumps({**config, "method": "prefix"}))
    weights = root / "nan" / "suffixtune_model.safetensors"
    save_file({k: torch.full_like(v, float("nan")) for k, v in load_file(weights).items()}, weights)
    data = (root / "truncated" / "suffixtune_model.safetensors").read_bytes()
    (root / "truncated" / "suffixtune_model.safetensors").write_bytes(data[: len(data) // 2])
    (root / "empty" / "suffixtune_model.safetensors").write_bytes(b"")
    (root / "missing" / "suffixtune_model.safetensors").unlink()
    (root / "flipped" / "suffixtune_model.safetensors").write_bytes(data[:-4] + bytes([data[-4] ^ 1]) + data[-3:])
    (root / "notjson" / "suffixtune_config.json").write_text("{bad")
    (root / "nomethod" / "suffixtune_config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "method"}))
    return copies


def verdict(code: int, expected: int, stderr: str) -> str:
    if "Traceback" in stderr:
        return "crash"
    if code == expected == 0:
        return "ok"
    if code == expected == 2 and stderr.strip().splitlines()[-1].startswith("suffixtune"):
        return "clear"
    return "unexpected"


def row(number: int, kind: str, given: str, done: subprocess.CompletedProcess, expected: int, root: Path, counts: Counter) -> str:
    stderr = done.stderr.decode(errors="replace")
    result = verdict(done.returncode, expected, stderr)
    counts[result] += 1
    message = [line for line in stderr.strip().splitlines() if line.startswith("suffixtune")][-1:] or stderr.strip().splitlines()[-1:]
    shown = "" if result == "ok" else (message[0] if message else "").replace(str(root), "…").replace("|", "\\|")[:220]
    line = f"| {number} | {kind} | {given} | {done.returncode} | {shown} | {result} |"
    print(line, flush=True)
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="Markdown file for the table.")
    args = parser.parse_args()
    command = str(Path(sys.executable).parent / "suffixtune")
    rows, counts = [], Counter()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        model = tiny_model(root / "tiny-gpt2")
        f = files(root)
        copies = {}
        for kind, given, argv, stdin, expected in cases(root, model, f):
            if kind == "artifact" and not copies:
                copies = damage(root / "run", root)
            argv = [copies.get(arg, arg) for arg in argv]
            done = subprocess.run([command, *argv], input=stdin if stdin is not None else b"", capture_output=True, cwd=root)
            rows.append(row(len(rows) + 1, kind, given, done, expected, root, counts))
        for kind, given, done, expected in interruptions(command, root, model, f):
            rows.append(row(len(rows) + 1, kind, given, done, expected, root, counts))
    totals = ", ".join(f"{counts[k]} {k}" for k in ("clear", "ok", "unexpected", "crash"))
    table = ["| # | kind | given | exit | message | verdict |", "|---|---|---|---|---|---|", *rows]
    Path(args.out).write_text(f"{len(rows)} cases: {totals}.\n\n" + "\n".join(table) + "\n")
    print(f"{len(rows)} cases: {totals}")


if __name__ == "__main__":
    main()
