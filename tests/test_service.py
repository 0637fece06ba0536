"""The HTTP service on a real socket: answers, limits with their 4xx, micro-batching, and failures kept to one request."""

import asyncio
import json
import re
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import httpx
import pytest
import torch
import uvicorn
from fastapi.testclient import TestClient

from conftest import make_backbone
from suffixtune import Classifier, Task
from suffixtune.artifacts import CONFIG_NAME
from suffixtune.cli import main
from suffixtune.methods.soft_prompt import SoftPromptConfig
from suffixtune.multitask import MultiTaskClassifier
from suffixtune.service import MicroBatcher, ServiceSettings, create_app

TASKS = {
    "sentiment": (Task(name="sentiment", text_columns=("text",), label_names=("neg", "pos")), 3),
    "topic": (Task(name="topic", text_columns=("text",), label_names=("a", "b", "c")), 5),
    "pair": (Task(name="pair", text_columns=("premise", "hypothesis"), label_names=("no", "yes")), 2),
}


@pytest.fixture(scope="module")
def multitask(tokenizer_dir, tmp_path_factory):
    backbone, tokenizer = make_backbone("gpt2", tokenizer_dir)
    paths = {}
    for name, (task, prompt_length) in TASKS.items():
        classifier = Classifier.build(backbone, tokenizer, task, "suffix", SoftPromptConfig(prompt_length=prompt_length))
        paths[name] = tmp_path_factory.mktemp(name)
        classifier.save_pretrained(paths[name])
    return MultiTaskClassifier.from_pretrained(paths, backbone=backbone, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def server(multitask):
    """uvicorn on a socket bound before it starts, so requests queue until it serves them: no waiting loop."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    settings = ServiceSettings(max_texts=4, max_text_chars=2_000, max_wait_ms=100)
    app_server = uvicorn.Server(uvicorn.Config(create_app(multitask, settings), log_level="warning"))
    thread = threading.Thread(target=app_server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    app_server.should_exit = True
    thread.join(timeout=30)
    assert not thread.is_alive()


def test_answers_real_http_requests(server, multitask):
    with httpx.Client(base_url=server, timeout=60) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        listed = client.get("/v1/tasks").json()
        assert listed["base_model"] == "tiny-gpt2-seed0"
        assert [(t["name"], t["labels"], t["prompt_length"], t["shared_cache"]) for t in listed["tasks"]] == [
            ("sentiment", ["neg", "pos"], 3, True), ("topic", ["a", "b", "c"], 5, True), ("pair", ["no", "yes"], 2, True)
        ]
        for task in listed["tasks"]:  # where each task's artifact lives (made by mktemp(name) above)
            assert Path(task["artifact"]).name.startswith(task["name"]) and (Path(task["artifact"]) / CONFIG_NAME).is_file()
        texts = ["a fine day", {"text": "rain again", "premise": "It rains.", "hypothesis": "The street is wet."}]
        answer = client.post("/v1/classify", json={"texts": texts, "tasks": ["topic", "sentiment"]})
        assert answer.status_code == 200
        body = answer.json()
        assert body["results"] == multitask.classify(texts, tasks=["topic", "sentiment"])
        assert list(body["results"][0]) == ["topic", "sentiment"] and body["truncated"] == []
        pair = client.post("/v1/classify", json={"texts": texts[1:]}).json()["results"][0]
        assert set(pair) == {"sentiment", "topic", "pair"} and set(pair["pair"]["probabilities"]) == {"no", "yes"}
        assert "/v1/classify" in client.get("/openapi.json").json()["paths"]


BAD_REQUESTS = {
    "malformed JSON": (dict(content=b'{"texts": ["a"', headers={"content-type": "application/json"}), 422, "JSON decode error"),
    "no texts field": (dict(json={"text": ["a"]}), 422, "texts"),
    "empty texts": (dict(json={"texts": []}), 422, "at least 1 item"),
    "texts not strings": (dict(json={"texts": [3]}), 422, "texts"),
    "too many texts": (dict(json={"texts": ["a"] * 5}), 413, "texts: 5 in one request, the limit is 4"),
    "text too long": (dict(json={"texts": ["a" * 2_001]}), 413, "texts[0]: 2001 characters, the limit is 2000"),
    "empty task list": (dict(json={"texts": ["a"], "tasks": []}), 422, "tasks"),
    "unknown task": (dict(json={"texts": ["a"], "tasks": ["sentiment", "spam"]}), 404, "unknown task(s) ['spam']"),
    "pair task given a string": (dict(json={"texts": ["a"], "tasks": ["pair"]}), 422, "task 'pair' classifies text pairs"),
    "missing pair field": (dict(json={"texts": [{"premise": "p"}], "tasks": ["pair"]}), 422, "needs string field(s) ['hypothesis']"),
    "empty text": (dict(json={"texts": ["ok", ""], "tasks": ["topic"]}), 422, "texts[1] is blank"),
    "blank pair field": (dict(json={"texts": [{"premise": "p", "hypothesis": "  "}], "tasks": ["pair"]}), 422, "texts[0].hypothesis is blank"),
    "lone surrogate": (dict(content=b'{"texts": ["\\ud800 great"]}', headers={"content-type": "application/json"}), 422,
                       "texts[0]: character 0 ('\\\\ud800') is a lone surrogate"),
    "infinite task name": (dict(content=b'{"texts": ["a"], "tasks": [1e999999]}', headers={"content-type": "application/json"}), 422,
                           '"input": "inf"'),
    "not UTF-8": (dict(content=b'{"texts": ["caf\xe9"]}', headers={"content-type": "application/json"}), 422, "must be UTF-8"),
    "nested too deep": (dict(content=b'{"texts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", headers={"content-type": "application/json"}),
                        422, "must be UTF-8 and nested at most"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_their_4xx_and_the_server_keeps_serving(server, case):
    request, status, message = BAD_REQUESTS[case]
    with httpx.Client(base_url=server, timeout=60) as client:
        answer = client.post("/v1/classify", **request)
        assert answer.status_code == status
        assert message in json.dumps(answer.json()["detail"])
        assert client.post("/v1/classify", json={"texts": ["still here"], "tasks": ["sentiment"]}).status_code == 200


def test_long_texts_are_cut_and_reported_or_refused(multitask):
    long_text = " ".join(["word"] * 300)  # 300 tokens; the tiny model reads at most 128 - P
    with TestClient(create_app(multitask)) as client:
        body = client.post("/v1/classify", json={"texts": ["short", long_text], "tasks": ["sentiment"]}).json()
        assert body["truncated"] == [1]
    with TestClient(create_app(multitask, ServiceSettings(long_texts="reject"))) as client:
        answer = client.post("/v1/classify", json={"texts": ["short", long_text], "tasks": ["sentiment"]})
        assert answer.status_code == 413
        assert "texts[1]: 300 tokens, but task 'sentiment' reads at most 125" in answer.json()["detail"]


SINGLE = ["sentiment", "topic"]


def test_concurrent_requests_are_gathered_into_batches(server, multitask):
    texts = [f"text number {i} is {'good' if i % 2 else 'bad'}" for i in range(12)]

    async def send_all():
        async with httpx.AsyncClient(base_url=server, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/classify", json={"texts": [t], "tasks": SINGLE}) for t in texts))

    before = httpx.get(f"{server}/v1/stats").json()
    answers = asyncio.run(send_all())
    after = httpx.get(f"{server}/v1/stats").json()
    assert [a.status_code for a in answers] == [200] * len(texts)
    for answer, expected in zip(answers, multitask.classify(texts, SINGLE), strict=True):  # batched with other texts
        got = answer.json()["results"][0]
        assert {t: r["label"] for t, r in got.items()} == {t: r["label"] for t, r in expected.items()}
        for task, result in got.items():
            assert result["probabilities"] == pytest.approx(expected[task]["probabilities"], abs=1e-5)
    assert after["requests"] - before["requests"] == len(texts)
    assert after["batches"] - before["batches"] < len(texts)
    assert after["largest_batch_requests"] > 1


def test_a_failing_request_fails_alone():
    def run(rows, tasks):
        if "boom" in rows:
            raise RuntimeError("cannot classify boom")
        return [{task: row.upper() for task in tasks} for row in rows]

    async def scenario():
        batcher = MicroBatcher(run, max_batch_texts=8, max_wait_ms=100)
        await batcher.start()
        answers = await asyncio.gather(
            batcher.submit(["a", "b"], ("t",)), batcher.submit(["boom"], ("t",)), batcher.submit(["c"], ("t", "u")),
            return_exceptions=True,
        )
        await batcher.stop()
        return answers, batcher.stats

    (first, failed, other_tasks), stats = asyncio.run(scenario())
    assert first == [{"t": "A"}, {"t": "B"}] and other_tasks == [{"t": "C", "u": "C"}]
    assert isinstance(failed, RuntimeError) and str(failed) == "cannot classify boom"
    assert stats.failed_batches == 2  # the gathered call, then "boom" alone
    assert stats.requests == 2 and stats.largest_batch_requests == 1


def test_a_batch_never_holds_more_texts_than_its_limit():
    calls = []

    def run(rows, tasks):
        calls.append(len(rows))
        return [{task: row for task in tasks} for row in rows]

    async def scenario():
        batcher = MicroBatcher(run, max_batch_texts=8, max_wait_ms=100)
        await batcher.start()
        answers = await asyncio.gather(*(batcher.submit([letter] * size, ("t",)) for letter, size in (("a", 6), ("b", 3), ("c", 2))))
        await batcher.stop()
        return answers, batcher.stats

    answers, stats = asyncio.run(scenario())
    assert answers == [[{"t": "a"}] * 6, [{"t": "b"}] * 3, [{"t": "c"}] * 2]
    assert calls == [6, 5] and stats.largest_batch_texts == 6  # "b" would have made 9: it opens the next batch


def test_a_model_error_is_a_500_and_the_server_goes_on(multitask, monkeypatch):
    real = multitask.classify

    def flaky(rows, tasks=None, batch_size=64):
        if "boom" in rows:
            raise RuntimeError("CUDA out of memory")
        return real(rows, tasks, batch_size)

    monkeypatch.setattr(multitask, "classify", flaky)
    with TestClient(create_app(multitask)) as client:
        answer = client.post("/v1/classify", json={"texts": ["boom"], "tasks": SINGLE})
        assert answer.status_code == 500 and "RuntimeError: CUDA out of memory" in answer.json()["detail"]
        assert client.post("/v1/classify", json={"texts": ["fine"], "tasks": SINGLE}).status_code == 200


def test_predict_cli_runs_several_artifacts(tiny_model_dir, tmp_path, capsys):
    from suffixtune import load_backbone

    backbone, tokenizer = load_backbone(str(tiny_model_dir))
    for name, (task, prompt_length) in list(TASKS.items())[:2]:
        Classifier.build(backbone, tokenizer, task, "suffix", SoftPromptConfig(prompt_length=prompt_length)).save_pretrained(tmp_path / name)
    args = ["predict", str(tmp_path / "sentiment"), f"mood={tmp_path / 'topic'}", "--text", "hello", "--text", "bye"]
    assert main(args) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["text"] for line in lines] == ["hello", "bye"]
    assert list(lines[0]["tasks"]) == ["sentiment", "mood"] and set(lines[0]["tasks"]["mood"]["probabilities"]) == {"a", "b", "c"}
    assert main(["serve", str(tmp_path / "sentiment"), str(tmp_path / "sentiment")]) == 2
    assert "are both named 'sentiment'; name them as NAME=DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", str(tmp_path / "sentiment"), "--long-texts", "drop"])
    assert "invalid choice: 'drop' (choose from 'truncate', 'reject')" in capsys.readouterr().err


@pytest.mark.slow
def test_the_api_docs_render_with_the_network_blocked(server):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("Chromium not found; `apt-get install chromium` runs the browser check of /docs")
    with httpx.Client(base_url=server, timeout=60) as client:
        page = client.get("/docs").text
        assert "cdn" not in page.lower()  # FastAPI's default page loads Swagger UI from a CDN: blank offline
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", "--virtual-time-budget=15000",
                          "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", f"{server}/docs"],  # no other host
                         capture_output=True, text=True, timeout=120).stdout
    rendered = set(re.findall(r'data-path="([^"]+)"', dom))  # one per operation Swagger UI lists
    assert {"/v1/classify", "/v1/tasks", "/v1/stats", "/healthz"} <= rendered, dom[-2000:]


@pytest.fixture(scope="module")
def writers(multitask, tmp_path_factory):
    """Two suffix generation tasks on the classifiers' backbone (prompts moved from where they start)."""
    from suffixtune.generator import Generator
    from suffixtune.multitask import MultiTaskGenerator

    task = Task(name="describe", kind="generation", text_columns=("text",), target_column="target", label_names=None)
    paths = {}
    for seed, name in enumerate(["caption", "summary"]):
        torch.manual_seed(seed)
        config = SoftPromptConfig(prompt_length=2 + seed, prompt_init="random")
        generator = Generator.build(multitask.backbone, multitask.tokenizer, task, "suffix", config, max_length=40, max_target_length=12)
        paths[name] = tmp_path_factory.mktemp(name)
        generator.save_pretrained(paths[name])
    return MultiTaskGenerator.from_pretrained(paths, backbone=multitask.backbone, tokenizer=multitask.tokenizer), paths


def test_generation_tasks_are_served_beside_classification_tasks(multitask, writers):
    from suffixtune.decoding import Decoding
    from suffixtune.generator import Generator

    generator, paths = writers
    sources = ["the cat sat on the mat", "rain in the north"]
    with TestClient(create_app(multitask, ServiceSettings(max_num_beams=4), generator)) as client:
        listed = {t["name"]: t["kind"] for t in client.get("/v1/tasks").json()["tasks"]}
        assert listed == {"sentiment": "classification", "topic": "classification", "pair": "classification",
                          "caption": "generation", "summary": "generation"}
        answer = client.post("/v1/generate", json={"texts": sources, "num_beams": 2, "max_new_tokens": 5})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        for name, path in paths.items():  # each task writes what its artifact alone writes
            alone = Generator.from_pretrained(path, backbone=multitask.backbone, tokenizer=multitask.tokenizer)
            assert [row[name] for row in body["results"]] == alone.generate([{"text": s} for s in sources], Decoding(2, 5))
        assert body["truncated"] == [] and body["base_model"] == "tiny-gpt2-seed0"
        assert client.post("/v1/classify", json={"texts": sources, "tasks": ["sentiment"]}).status_code == 200
        stats = client.get("/v1/stats").json()
        assert stats["batches"] == 1 and stats["generate"]["batches"] == 1 and stats["generate"]["texts"] == 2
        refused = {
            413: ({"texts": sources, "num_beams": 5}, "num_beams: 5, the limit is 4"),
            422: ({"texts": sources, "num_beams": 1, "max_new_tokens": 500}, "task 'caption': --max_new_tokens 500 could run past"),
            404: ({"texts": sources, "num_beams": 1, "tasks": ["sentiment"]}, "unknown task(s) ['sentiment']; loaded tasks are ['caption', 'summary']"),
        }
        for status, (request, message) in refused.items():
            answer = client.post("/v1/generate", json=request)
            assert answer.status_code == status and message in answer.json()["detail"]
        assert client.post("/v1/generate", json={"texts": ["x"], "num_beams": 1, "length_penalty": "nan"}).status_code == 422
        misspelt = client.post("/v1/generate", json={"texts": ["x"], "num_beams": 1, "max_tokens": 3})
        assert misspelt.status_code == 422 and "max_tokens" in misspelt.text and "extra_forbidden" in misspelt.text
        assert client.app.state.batcher.executor is client.app.state.writer.executor  # one model thread for both kinds
    with TestClient(create_app(multitask)) as client:
        answer = client.post("/v1/generate", json={"texts": sources})
        assert answer.status_code == 404 and "no generation tasks are loaded" in answer.json()["detail"]
        assert "generate" not in client.get("/v1/stats").json()


def test_serve_loads_both_kinds_onto_one_backbone(tiny_model_dir, tmp_path, monkeypatch):
    import argparse

    from suffixtune import load_backbone
    from suffixtune.cli import load_served
    from suffixtune.generator import Generator

    backbone, tokenizer = load_backbone(str(tiny_model_dir))
    Classifier.build(backbone, tokenizer, TASKS["sentiment"][0], "suffix").save_pretrained(tmp_path / "sentiment")
    task = Task(name="describe", kind="generation", text_columns=("text",), target_column="target", label_names=None)
    Generator.build(backbone, tokenizer, task, "suffix").save_pretrained(tmp_path / "describe")
    options = argparse.Namespace(model=None, dtype="float32", device="cpu")
    classifier, generator = load_served({"sentiment": str(tmp_path / "sentiment"), "describe": str(tmp_path / "describe")}, options)
    assert list(classifier.tasks) == ["sentiment"] and list(generator.tasks) == ["describe"]
    assert classifier.backbone is generator.backbone
    classifier, generator = load_served({"describe": str(tmp_path / "describe")}, options)
    assert classifier.tasks == {} and list(generator.tasks) == ["describe"]
    with TestClient(create_app(classifier, generator=generator)) as client:
        answer = client.post("/v1/classify", json={"texts": ["a"]})
        assert answer.status_code == 404 and "no classification tasks are loaded" in answer.json()["detail"]
    served = []  # the app `suffixtune serve` would run, wired as the command wires it
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.append((app, options)))
    assert main(["serve", str(tmp_path / "sentiment"), str(tmp_path / "describe"), "--port", "8123", "--max-num-beams", "2"]) == 0
    (app, options), = served
    assert options["port"] == 8123
    with TestClient(app) as client:
        assert client.post("/v1/classify", json={"texts": ["a"]}).status_code == 200
        assert client.post("/v1/generate", json={"texts": ["a"], "num_beams": 2, "max_new_tokens": 3}).status_code == 200
        assert client.post("/v1/generate", json={"texts": ["a"], "num_beams": 3}).status_code == 413
