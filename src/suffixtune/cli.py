"""`suffixtune train | eval | predict | serve | sweep | results | report | inspect`; train flags are dataclass fields."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import hashlib
import json
import logging
import os
import sys
import typing
from pathlib import Path

from . import __version__
from .errors import RunFailed, SuffixTuneError

EXIT_BAD_INPUT, EXIT_RUN_FAILED = 2, 3


def run_train(argv: list[str]) -> int:
    given = {arg.split("=")[0] for arg in argv if arg.startswith("--") or arg == "-h"}
    wants_help = bool({"-h", "--help"} & given)
    if not wants_help and not {"--output", "--output_dir", "--output-dir"} & given:
        raise SuffixTuneError("pass --output DIR: the run directory for the artifact, metrics.json and checkpoints")
    method = argparse.ArgumentParser(add_help=False)
    method.add_argument("--method")
    chosen = method.parse_known_args(argv)[0].method
    flags_file = train_flags_path(chosen)
    known = read_train_flags(flags_file)
    if known is not None:  # answer --help and flag typos without importing torch
        if wants_help:
            print(known["help"], end="")
            return 0
        refuse_unknown_flags([flag for flag in given if not any(o.startswith(flag) for o in known["options"])], known)
    from .training import train_parser

    parser = train_parser(chosen) if chosen else train_parser()
    if known is None:
        known = write_train_flags(parser, chosen, flags_file)
    try:
        *parsed, remaining = parser.parse_args_into_dataclasses(
            merge_repeated(argv, "--label_column"), return_remaining_strings=True
        )
    except ValueError as error:  # a dataclass's own check, e.g. TrainingArguments' on --bf16 without a GPU
        raise SuffixTuneError(str(error)) from None
    refuse_unknown_flags([arg for arg in remaining if arg.startswith("-")] or remaining, known)
    model_args, data_args, method_args, method_config, training_args, decoding = parsed
    from .training import train

    record = train(model_args, data_args, method_args, method_config, training_args, decoding)
    if os.environ.get("RANK", "0") == "0":  # under torchrun / accelerate launch, the main process prints
        print_line(json.dumps({"output": training_args.output_dir, "status": record["status"], **record["eval"]}))
    return 0


def train_flags_path(method: str | None) -> Path:
    """Where `train`'s help and flags for `method` are kept, keyed by every source and version that shapes them."""
    import importlib.metadata

    from .artifacts import cache_dir

    package = Path(__file__).parent
    digest = hashlib.blake2b(f"{__version__} {importlib.metadata.version('transformers')} {method}".encode(), digest_size=8)
    for source in sorted([package / "training" / "arguments.py", package / "decoding.py", *(package / "methods").rglob("*.py")]):
        digest.update(source.read_bytes())
    return cache_dir() / "train-flags" / f"{digest.hexdigest()}.json"


def read_train_flags(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_train_flags(parser: argparse.ArgumentParser, method: str | None, path: Path) -> dict:
    """Keep the parser's help and flags, and each method's own flags, so the next `--help` or typo needs no torch."""
    from .artifacts import atomic_write
    from .methods import METHODS
    from .training import MethodArguments

    known = {
        "method": method or MethodArguments.method,
        "help": parser.format_help(),
        "options": sorted(option for action in parser._actions for option in action.option_strings),
        "method_options": {name: sorted(option_flags(cls.config_class)) for name, cls in METHODS.items()},
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda staging: Path(staging).write_text(json.dumps(known)))
    except OSError:  # a read-only cache costs speed, not correctness
        pass
    return known


def refuse_unknown_flags(unknown: list[str], known: dict) -> None:
    """Name each flag `train --method METHOD` does not take: a near miss, or the method whose option it is."""
    if not unknown:
        return
    method = known["method"]
    own = set(known["method_options"].get(method, []))
    reasons = []
    for flag in unknown:
        owners = [name for name, options in known["method_options"].items() if flag in options and flag not in own]
        close = difflib.get_close_matches(flag, sorted(own), n=1) or difflib.get_close_matches(flag, known["options"], n=1)
        reasons.append(f"{flag} (an option of --method {', '.join(owners)}, not of --method {method})" if owners
                       else f"{flag} (did you mean {close[0]}?)" if close else flag)
    raise SuffixTuneError(f"unrecognized arguments: {'; '.join(reasons)}; `suffixtune train --help` lists the flags")


def merge_repeated(argv: list[str], flag: str) -> list[str]:
    """`--flag a --flag b` as `--flag a b` (argparse would keep only the last of a list flag given twice)."""
    names = {flag, flag.replace("_", "-")}
    values, rest, taking, seen = [], [], False, False
    for arg in argv:
        if arg in names:
            taking = seen = True
        elif taking and not arg.startswith("--"):
            values.append(arg)
        else:
            taking = False
            rest.append(arg)
    return rest + [flag, *values] if seen else rest


def print_line(text: str) -> None:
    """One whole line on stdout in one write, so output of other processes sharing the pipe cannot split it."""
    sys.stdout.flush()
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def option_flags(config_class: type) -> set[str]:
    names = {f.name for f in dataclasses.fields(config_class)}
    return {f"--{n}" for n in names} | {f"--{n.replace('_', '-')}" for n in names}


def run_eval(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="suffixtune eval", description="Print an artifact's metrics as JSON.")
    parser.add_argument("artifact", help="Directory written by `suffixtune train`.")
    parser.add_argument("--data", help="Directory with the task's files (default: the hub).")
    parser.add_argument("--split", default="validation", help="Split of the task's data to score: validation (default), test, train.")
    parser.add_argument("--validation", help="Evaluation file instead of a split of the task's data.")
    parser.add_argument("--max-eval-samples", "--max_eval_samples", type=positive_int)
    parser.add_argument("--batch-size", "--batch_size", type=positive_int, default=64)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--model", help=MODEL_HELP)
    add_decoding_arguments(parser, "for generation artifacts. ")
    options = parser.parse_args(argv)
    decoding = decoding_from(options)
    from .training import DataArguments, evaluate_artifact

    data = DataArguments(data=options.data, validation=options.validation, max_eval_samples=options.max_eval_samples)
    metrics = evaluate_artifact(options.artifact, data, options.batch_size, default_device(options.device), options.split,
                                options.model, decoding)
    print(json.dumps(metrics))
    return EXIT_RUN_FAILED if metrics["failure"] else 0


def run_predict(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="suffixtune predict",
        description="Classify texts with one or more artifacts of one base model: one JSON line per text. With one "
        "artifact its label and probabilities (or value) sit beside the text; with several, under \"tasks\", one "
        "entry per task. Suffix (and head) artifacts share one pass per text; others run a pass of their own.",
    )
    add_model_arguments(parser)
    parser.add_argument("--text", action="append", help="A text to classify (repeatable); without it, JSONL on stdin.")
    parser.add_argument("--batch-size", "--batch_size", type=positive_int, default=64)
    options = parser.parse_args(argv)
    from .artifacts import read_config

    named = named_artifacts(options.artifacts)
    tasks = [read_config(directory).as_task() for directory in named.values()]
    if options.text:
        for task in tasks:
            if len(task.text_columns) > 1:
                example = json.dumps({c: "..." for c in task.text_columns})
                raise SuffixTuneError(f"task {task.name!r} classifies text pairs; pass JSONL lines like {example} on stdin")
        rows, shown = options.text, [{"text": text} for text in options.text]
    else:
        rows = shown = list(read_jsonl(getattr(sys.stdin, "buffer", sys.stdin), tasks))
        if not rows:
            raise SuffixTuneError("no texts: pass --text TEXT, or JSON lines on stdin such as {\"" + tasks[0].text_columns[0]
                                  + "\": \"...\"}")
    classifier = load_multitask(named, options)
    for row, result in zip(shown, classifier.classify(rows, batch_size=options.batch_size), strict=True):
        print(json.dumps({**row, **next(iter(result.values()))} if len(named) == 1 else {**row, "tasks": result}))
    return 0


def run_generate(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="suffixtune generate",
        description="Write text with one or more generation artifacts of one base model: one JSON line per source, its "
        "fields and \"generated\": the text, or with several artifacts one text per task. Suffix artifacts write from "
        "one pass per source; others run a pass of their own.",
    )
    add_model_arguments(parser)
    parser.add_argument("--text", action="append", help="A source to write from (repeatable); without it, JSONL on stdin.")
    parser.add_argument("--batch-size", "--batch_size", type=positive_int, default=16)
    add_decoding_arguments(parser)
    options = parser.parse_args(argv)
    decoding = decoding_from(options)
    import torch

    from .artifacts import read_config
    from .multitask import MultiTaskGenerator

    named = named_artifacts(options.artifacts)
    tasks = [read_config(directory).as_task() for directory in named.values()]
    if options.text:
        for task in tasks:
            if len(task.text_columns) > 1:
                raise SuffixTuneError(f"task {task.name!r} writes from several columns; pass JSONL lines like "
                                      f"{json.dumps({c: '...' for c in task.text_columns})} on stdin")
        rows = [{task.text_columns[0]: text for task in tasks} for text in options.text]
    else:
        rows = list(read_jsonl(getattr(sys.stdin, "buffer", sys.stdin), tasks))
        if not rows:
            raise SuffixTuneError(f"no sources: pass --text TEXT, or JSON lines on stdin such as {{\"{tasks[0].text_columns[0]}\": \"...\"}}")
    generator = MultiTaskGenerator.from_pretrained(
        named, device=default_device(options.device), dtype=getattr(torch, options.dtype), model=options.model
    )
    for row, written in zip(rows, generator.generate(rows, decoding=decoding, batch_size=options.batch_size), strict=True):
        print_line(json.dumps({**row, "generated": next(iter(written.values())) if len(named) == 1 else written}))
    return 0


def add_decoding_arguments(parser: argparse.ArgumentParser, applies_to: str = "") -> None:
    """The flags of `Decoding`, as `suffixtune train` takes them."""
    from .decoding import Decoding

    for setting in dataclasses.fields(Decoding):
        parser.add_argument(f"--{setting.name.replace('_', '-')}", f"--{setting.name}", dest=setting.name, default=setting.default,
                            type=float if setting.name == "length_penalty" else int,
                            help=f"{applies_to}{setting.metadata['help']} (default {setting.default})")


def decoding_from(options: argparse.Namespace):
    from .decoding import Decoding

    return Decoding(**{setting.name: getattr(options, setting.name) for setting in dataclasses.fields(Decoding)})


def run_serve(argv: list[str]) -> int:
    from .service.settings import ServiceSettings

    parser = argparse.ArgumentParser(
        prog="suffixtune serve",
        description="Serve artifacts of one base model over HTTP: POST /v1/classify (classification artifacts), POST "
        "/v1/generate (generation artifacts), GET /v1/tasks, GET /v1/stats, GET /healthz; the OpenAPI schema at "
        "/openapi.json and /docs. Every artifact loads onto one backbone.",
    )
    add_model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1: this machine only).")
    parser.add_argument("--port", type=port_number, default=8000, help="TCP port, 1 to 65535 (default 8000).")
    hints = typing.get_type_hints(ServiceSettings)
    for setting in dataclasses.fields(ServiceSettings):
        choices = typing.get_args(hints[setting.name]) if typing.get_origin(hints[setting.name]) is typing.Literal else None
        parser.add_argument(
            f"--{setting.name.replace('_', '-')}", f"--{setting.name}", dest=setting.name, default=setting.default,
            type=type(setting.default), choices=choices, help=setting.metadata["help"] + f" (default {setting.default})",
        )
    options = parser.parse_args(argv)
    settings = ServiceSettings(**{s.name: getattr(options, s.name) for s in dataclasses.fields(ServiceSettings)})
    try:
        import uvicorn

        from .service import create_app
    except ImportError as error:
        raise SuffixTuneError(f"suffixtune serve needs FastAPI and uvicorn ({error}); pip install 'suffixtune[serve]'") from None
    classifier, generator = load_served(named_artifacts(options.artifacts), options)
    app = create_app(classifier, settings, generator)
    uvicorn.run(app, host=options.host, port=options.port, log_level="info")
    return 0


def positive_int(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{number} must be at least 1")
    return number


def port_number(text: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port; use 1 to 65535")
    return port


def run_sweep(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="suffixtune sweep", description="Plan or run a sweep of training runs from a YAML file.")
    commands = parser.add_subparsers(dest="command", required=True)
    plan = commands.add_parser("plan", help="Check the file and print the runs it would do, one per line.")
    plan.add_argument("file", help="Sweep YAML: fixed settings, a grid and overrides (see suffixtune.sweeps.spec).")
    run = commands.add_parser("run", help="Do the sweep's runs; start as many workers, here or on other machines, as you like.")
    run.add_argument("file", help="Sweep YAML.")
    run.add_argument("--output-dir", "--output_dir", help="Where run directories go (default: sweeps/NAME); shared "
                     "between machines if retries should resume another machine's checkpoints.")
    run.add_argument("--storage", help="Optuna storage URL (default: sqlite:///OUTPUT_DIR/sweep.db); "
                     "postgresql://USER:PASSWORD@HOST/DB lets workers on many machines share the sweep.")
    run.add_argument("--workers", type=positive_int, default=1, help="Worker processes to start here (one GPU each where there are enough).")
    run.add_argument("--heartbeat", type=positive_int, default=30, help="Seconds between a worker's heartbeats.")
    run.add_argument("--grace-period", "--grace_period", type=positive_int, default=120,
                     help="Seconds without a heartbeat after which a run counts as lost and is retried.")
    run.add_argument("--retry-failed", "--retry_failed", action="store_true",
                     help="Run again the runs that raised an error (from one worker, before starting others).")
    options = parser.parse_args(argv)
    from .sweeps import load_sweep

    sweep = load_sweep(options.file)
    runs = sweep.runs()
    if options.command == "plan":
        merged = sweep.cells - len(runs)
        print(f"sweep {sweep.name!r}: {len(runs)} runs from {sweep.cells} grid cells"
              + (f" ({merged} merged: an option that does not apply to their method left them identical)" if merged else ""))
        if sweep.search:
            print(f"each run {sweep.search.trials} times, a {sweep.search.sampler} sampler drawing "
                  f"{', '.join(sweep.search.space)} from the finished runs of its grid cell")
        for planned in runs:
            print(f"{planned.run_id}  {planned.name}  suffixtune train {' '.join(planned.to_argv())}")
        return 0
    from .sweeps.runner import launch_workers, prepare_study, retry_failed, unfinished_units, work
    from .sweeps.storage import default_storage_url, masked, open_storage

    output_dir = Path(options.output_dir or Path("sweeps") / sweep.name)
    output_dir.mkdir(parents=True, exist_ok=True)
    url = options.storage or default_storage_url(output_dir)
    storage = open_storage(url, options.heartbeat, options.grace_period)
    study = prepare_study(sweep, storage)
    if options.retry_failed:
        print(f"enqueued again: {retry_failed(study)} failed runs", file=sys.stderr)
    if options.workers > 1:
        launch_workers([options.file, "--output-dir", str(output_dir), "--storage", url,
                        "--heartbeat", str(options.heartbeat), "--grace-period", str(options.grace_period)],
                       options.workers)
        done = None
    else:
        logging.getLogger("suffixtune.sweeps").setLevel(logging.INFO)
        done = work(sweep, storage, output_dir)
    failed = sorted(trial.user_attrs.get("name") or unit for unit, trial in unfinished_units(study).items())
    print(json.dumps({"sweep": sweep.name, "storage": masked(url), "runs": len(runs) * sweep.trials_per_run,
                      "runs_done_here": done, "failed": failed}))
    if failed:
        print(f"suffixtune sweep: {len(failed)} runs failed (their errors are in the storage and the log above); "
              "`suffixtune sweep run FILE --retry-failed` runs them again", file=sys.stderr)
    return EXIT_RUN_FAILED if failed else 0


def run_report(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="suffixtune report", description="Tables, figures and an HTML page from a sweep's runs.")
    parser.add_argument("--storage", required=True, help="Storage URL, or a sweep directory or sweep.db (SQLite).")
    parser.add_argument("--out", required=True, help="Directory for tables.md/.tex, figures/, runs.csv, report.md, index.html.")
    parser.add_argument("--study", help="One study of the storage (default: all).")
    parser.add_argument("--metric", help="Metric of the tables and figures (default: the tasks' main metric).")
    parser.add_argument("--no-inspect", action="store_true", help="Leave out prompt inspection.")
    parser.add_argument("--no-nearest-token-eval", action="store_true",
                        help="Inspect prompts without evaluating their nearest-token versions (which reads the dev set).")
    options = parser.parse_args(argv)
    if Path(options.out).exists() and not Path(options.out).is_dir():
        parser.error(f"--out {options.out} is a file; the report needs a directory (it writes several files)")
    from .report import build_report

    report = build_report(options.storage, options.out, options.study, options.metric, not options.no_inspect,
                          not options.no_nearest_token_eval)
    print(json.dumps({"out": str(report.out), "runs": len(report.runs), "metric": report.metric,
                      "figures": len(report.figures), "inspected": len(report.inspections)}))
    return 0


def run_results(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="suffixtune results", description="Export a sweep's run records as CSV or Parquet.")
    parser.add_argument("--storage", required=True, help="Storage URL, or a sweep directory or sweep.db (SQLite).")
    parser.add_argument("--out", required=True, help="FILE.csv or FILE.parquet.")
    parser.add_argument("--study", help="One study of the storage (default: all).")
    parser.add_argument("--per-epoch", "--per_epoch", action="store_true", help="One row per run and evaluation.")
    options = parser.parse_args(argv)
    from . import results

    frame = results.load(options.storage, options.study, options.per_epoch)
    path = results.export(frame, options.out)
    print(json.dumps({"out": str(path), "rows": len(frame)}))
    return 0


def run_inspect(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="suffixtune inspect", description="Nearest vocabulary tokens of a trained soft prompt.")
    parser.add_argument("artifact", help="Directory of a suffix or prefix run.")
    parser.add_argument("--compare", metavar="DIR2", help="Another run's prompt: prompt-to-prompt cosine similarity.")
    parser.add_argument("--data", help="Task data directory: also score the prompt made of the nearest tokens.")
    parser.add_argument("--validation", help="Evaluation file instead of --data's validation split.")
    parser.add_argument("--max-eval-samples", "--max_eval_samples", type=positive_int)
    parser.add_argument("--top-k", "--top_k", type=positive_int, default=5, help="Nearest tokens shown per prompt vector.")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--json", action="store_true", help="Print JSON instead of text.")
    parser.add_argument("--model", help=MODEL_HELP)
    options = parser.parse_args(argv)
    from .inspection import compare_prompts, inspect_prompt
    from .training import DataArguments

    data = None
    if options.data or options.validation:
        data = DataArguments(data=options.data, validation=options.validation, max_eval_samples=options.max_eval_samples)
    inspection = inspect_prompt(options.artifact, data, options.top_k, default_device(options.device), model=options.model)
    comparison = compare_prompts(options.artifact, options.compare) if options.compare else None
    if options.json:
        print(json.dumps({**inspection.to_dict(), **({"compare": comparison} if comparison else {})}))
        return 0
    print(f"{options.artifact}: {inspection.method} prompt, {len(inspection.nearest)} vectors")
    for position, tokens in enumerate(inspection.nearest):
        print(f"  {position:3d}  " + "  ".join(f"{t['token']!r} {t['cosine']:.3f}" for t in tokens))
    print(f"nearest-token prompt: {inspection.nearest_prompt!r}")
    if inspection.soft_metrics:
        metrics = [k for k in inspection.soft_metrics if k not in ("task", "source", "rows", "failure")]
        for name in metrics:
            print(f"{name}: soft prompt {inspection.soft_metrics[name]:.4f}, nearest tokens "
                  f"{inspection.hard_metrics[name]:.4f} ({inspection.hard_metrics[name] - inspection.soft_metrics[name]:+.4f})")
    if comparison:
        print(f"vs {options.compare}: mean-vector cosine {comparison['mean_vector_cosine']:.3f}, "
              f"best-match cosine {comparison['best_match_cosine']:.3f}, same-position cosine "
              + " ".join(f"{v:.2f}" for v in comparison["same_position_cosine"]))
    return 0


MODEL_HELP = ("Load onto this copy of the base model (a directory, .gguf file or hub id) instead of the one the "
              "artifact records; its weights and tokenizer must still match.")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artifacts", nargs="+", metavar="[NAME=]DIR", help="Directories written by `suffixtune train`; "
                        "each task is named by its task unless NAME= is given.")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--model", help=MODEL_HELP)


def named_artifacts(specs: list[str]) -> dict[str, str]:
    """[NAME=]DIR arguments as {name: directory}."""
    from .multitask.classifier import name_artifacts

    pairs = [spec.partition("=")[::2] if "=" in spec and not Path(spec).exists() else (None, spec) for spec in specs]
    return name_artifacts(pairs)


def load_multitask(named: dict[str, str], options: argparse.Namespace):
    import torch

    from .multitask import MultiTaskClassifier

    return MultiTaskClassifier.from_pretrained(
        named, device=default_device(options.device), dtype=getattr(torch, options.dtype), model=options.model
    )


def load_served(named: dict[str, str], options: argparse.Namespace):
    """(MultiTaskClassifier, MultiTaskGenerator or None) of the artifacts by kind, on one backbone."""
    import torch

    from .artifacts import read_config
    from .backbone import load_backbone
    from .multitask import MultiTaskClassifier, MultiTaskGenerator

    kinds = {name: read_config(directory).task_kind for name, directory in named.items()}
    writers = {name: named[name] for name, kind in kinds.items() if kind == MultiTaskGenerator.artifact_class.task_kind}
    classifiers = {name: directory for name, directory in named.items() if name not in writers}
    if not writers:
        return load_multitask(classifiers, options), None
    backbone, tokenizer = load_backbone(options.model or read_config(next(iter(named.values()))).base_model,
                                        dtype=getattr(torch, options.dtype), device=default_device(options.device))
    generator = MultiTaskGenerator.from_pretrained(writers, backbone=backbone, tokenizer=tokenizer)
    classifier = (MultiTaskClassifier.from_pretrained(classifiers, backbone=backbone, tokenizer=tokenizer) if classifiers
                  else MultiTaskClassifier(backbone, tokenizer, {}))
    return classifier, generator


def read_jsonl(stream, tasks: list):
    """Rows of JSONL: an object with every task's text fields, or a string (each task's first text field)."""
    from .tasks.data import json_lines

    columns = list(dict.fromkeys(c for task in tasks for c in task.text_columns))
    for number, row in json_lines(stream, "stdin"):
        if isinstance(row, str):
            row = {task.text_columns[0]: row for task in tasks}
        if not isinstance(row, dict):
            raise SuffixTuneError(f"stdin line {number}: expected an object or a string, got {type(row).__name__}")
        missing = [c for c in columns if not isinstance(row.get(c), str)]
        if missing:
            raise SuffixTuneError(f"stdin line {number}: needs string field(s) {missing}, e.g. {{\"{columns[0]}\": \"...\"}}")
        yield {c: row[c] for c in columns}


def default_device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


USAGE = """Commands:
  train    train a classifier or generator (suffix prompts and the baselines); write its artifact and metrics.json
  eval     print an artifact's metrics on a split or file
  predict  classify texts with one or more artifacts
  generate write text with a generation artifact (E2E table-to-text, or your own source/target data)
  serve    serve artifacts over HTTP
  sweep    plan or run a sweep of training runs from a YAML file
  results  export a sweep's run records as CSV or Parquet
  report   tables, figures and an HTML page from a sweep's runs
  inspect  nearest vocabulary tokens of a trained soft prompt"""

COMMANDS = {
    "train": run_train, "eval": run_eval, "predict": run_predict, "generate": run_generate, "serve": run_serve, "sweep": run_sweep,
    "results": run_results, "report": run_report, "inspect": run_inspect,
}


def interrupted_hint(argv: list[str]) -> str:
    """For train: where the run resumes from; nothing is lost that a checkpoint holds."""
    if argv[0] != "train":
        return ""
    flags = [i for i, arg in enumerate(argv) if arg in ("--output", "--output_dir", "--output-dir")]
    output = argv[flags[-1] + 1] if flags and flags[-1] + 1 < len(argv) else None
    if output is None:
        return ""
    return (f"; run the same command again to resume from the last checkpoint in {output} "
            "(a run stopped before its first checkpoint starts afresh)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    usage = f"usage: suffixtune {{{','.join(COMMANDS)}}} ... (suffixtune COMMAND --help for its flags; --version)"
    if argv and argv[0] in ("-h", "--help"):
        print(f"{usage}\n\n{USAGE}")
        return 0
    if argv and argv[0] == "--version":
        print(f"suffixtune {__version__}")
        return 0
    if not argv or argv[0] not in COMMANDS:
        unknown = f"suffixtune: error: unknown command {argv[0]!r}; " if argv else "suffixtune: error: no command; "
        hint = difflib.get_close_matches(argv[0], COMMANDS, n=1) if argv else []
        print(unknown + (f"did you mean {hint[0]!r}? " if hint else "") + usage.removeprefix("usage: "), file=sys.stderr)
        return EXIT_BAD_INPUT
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("suffixtune.text_cache").setLevel(logging.INFO)  # where the text cache lives and what it costs
    try:
        return COMMANDS[argv[0]](argv[1:])
    except SuffixTuneError as error:
        print(f"suffixtune {argv[0]}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RunFailed as error:
        print(f"suffixtune {argv[0]}: {error}", file=sys.stderr)
        return EXIT_RUN_FAILED
    except KeyboardInterrupt:
        print(f"suffixtune {argv[0]}: interrupted{interrupted_hint(argv)}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`suffixtune predict ... | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
