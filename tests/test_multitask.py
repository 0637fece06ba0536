"""Shared-cache multi-task inference equals each artifact run alone, on tiny GPT-2 and Llama."""

import copy
import dataclasses

import pytest
import torch

from conftest import make_backbone, toy_task
from suffixtune import Classifier
from suffixtune.errors import ArtifactError, ConfigError, DataError
from suffixtune.methods.deep_prefix import DeepPrefixConfig
from suffixtune.methods.finetune import LastBlocksConfig
from suffixtune.methods.soft_prompt import SoftPromptConfig
from suffixtune.multitask import MultiTaskClassifier
from suffixtune.tasks import Task

TEXTS = [
    "Dull.",
    "The plot wanders, the acting is wooden, and the ending never arrives at all, which is a pity.",
    "great fun",
    "A gripping, beautifully shot film.",
    "x",
    "Not bad, though the second half drags a little.",
    "terrible",
]

# name: (method, method config, head, pooling, number of labels)
SUFFIX_TASKS = {
    "sentiment": ("suffix", SoftPromptConfig(prompt_length=3), "linear", "last", 2),
    "topic": ("suffix", SoftPromptConfig(prompt_length=7), "verbalizer", "last", 3),
    "mean-pooled": ("suffix", SoftPromptConfig(prompt_length=5), "linear", "mean", 4),
    "score": ("suffix", SoftPromptConfig(prompt_length=2), "linear", "last", 1),
    "probe": ("head", None, "linear", "last", 2),
    "mean-probe": ("head", None, "linear", "mean", 3),
}
ORDINARY_TASKS = {
    "prefix": ("prefix", SoftPromptConfig(prompt_length=4), "linear", "last", 2),
    "deep-prefix": ("deep-prefix", DeepPrefixConfig(prompt_length=3), "linear", "last", 2),
    "lora": ("lora", None, "linear", "last", 2),
    "last-blocks": ("last-blocks", LastBlocksConfig(blocks=1), "linear", "last", 2),
}


def save_artifacts(kind, tokenizer_dir, directory, specs, seed=0):
    """Each task trained for real would differ; random trained state is as good a test of the arithmetic."""
    backbone, tokenizer = make_backbone(kind, tokenizer_dir, seed=seed)
    paths = {}
    for number, (name, (method, config, head, pooling, labels)) in enumerate(specs.items()):
        task = dataclasses.replace(toy_task(labels), name=name)
        model = copy.deepcopy(backbone)
        classifier = Classifier.build(model, tokenizer, task, method, config, head, pooling=pooling)
        torch.manual_seed(100 + number)
        with torch.no_grad():
            for _, param in classifier.named_parameters():
                if param.requires_grad:
                    param.add_(torch.randn_like(param) * 0.2)
        paths[name] = directory / name
        classifier.save_pretrained(paths[name])
    return backbone, tokenizer, paths


def alone(paths, name, kind, tokenizer_dir, texts=TEXTS, padding_side="right"):
    """The reference: the artifact on a fresh backbone of its own, through the single-artifact path."""
    backbone, tokenizer = make_backbone(kind, tokenizer_dir, padding_side)
    classifier = Classifier.from_pretrained(paths[name], backbone=backbone, tokenizer=tokenizer)
    return classifier.predict_logits(texts, batch_size=3)


def count_calls(module):
    calls = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("text_pass", ["packed", "cached"])
def test_shared_cache_equals_each_artifact_alone(tokenizer_dir, tmp_path, kind, padding_side, text_pass):
    _, _, paths = save_artifacts(kind, tokenizer_dir, tmp_path, SUFFIX_TASKS)
    backbone, tokenizer = make_backbone(kind, tokenizer_dir, padding_side)
    multitask = MultiTaskClassifier.from_pretrained(paths, backbone=backbone, tokenizer=tokenizer, text_pass=text_pass)
    assert all(info.shared_cache for info in multitask.tasks.values())
    assert [multitask.tasks[n].prompt_length for n in SUFFIX_TASKS] == [3, 7, 5, 2, 0, 0]

    passes = count_calls(backbone.base_model)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    logits = multitask.forward(batch.input_ids, batch.attention_mask, list(SUFFIX_TASKS))
    assert len(passes) == {"packed": 1, "cached": 2}[text_pass]  # texts and suffixes together, or texts then suffixes

    results = multitask.classify(TEXTS, batch_size=3)
    for name in SUFFIX_TASKS:
        expected = alone(paths, name, kind, tokenizer_dir)
        torch.testing.assert_close(logits[name], expected, atol=1e-4, rtol=1e-4)
        for text_result, row in zip(results, expected, strict=True):
            reference = multitask.classifiers[name].describe(row)
            if "value" in reference:
                assert text_result[name]["value"] == pytest.approx(reference["value"], abs=1e-4)
            else:
                assert text_result[name]["label"] == reference["label"]
                got, want = text_result[name]["probabilities"], reference["probabilities"]
                assert list(got) == list(want) and got == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_other_methods_run_their_own_pass_and_leave_the_shared_backbone_alone(tokenizer_dir, tmp_path, kind):
    specs = {**ORDINARY_TASKS, "sentiment": SUFFIX_TASKS["sentiment"], "topic": SUFFIX_TASKS["topic"]}
    _, _, paths = save_artifacts(kind, tokenizer_dir, tmp_path, specs)
    backbone, tokenizer = make_backbone(kind, tokenizer_dir)
    before = {n: p.clone() for n, p in backbone.named_parameters()}
    multitask = MultiTaskClassifier.from_pretrained(paths, backbone=backbone, tokenizer=tokenizer)
    assert {n for n, info in multitask.tasks.items() if not info.shared_cache} == set(ORDINARY_TASKS)
    assert multitask.classifiers["lora"].backbone is not backbone and multitask.classifiers["prefix"].backbone is backbone
    assert {n for n, _ in backbone.named_parameters()} == set(before)  # no LoRA layers in the shared backbone
    assert all(torch.equal(p, before[n]) for n, p in backbone.named_parameters())

    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    logits = multitask.forward(batch.input_ids, batch.attention_mask, list(specs))
    for name in specs:
        torch.testing.assert_close(logits[name], alone(paths, name, kind, tokenizer_dir), atol=1e-4, rtol=1e-4)


def test_artifacts_loaded_by_path_each_change_a_backbone_of_their_own(tokenizer_dir, tmp_path, tiny_model_dir):
    """As `serve` loads them, without a backbone: LoRA and last-blocks may not change the one the others read."""
    specs = {name: ORDINARY_TASKS[name] for name in ("lora", "last-blocks")} | {"sentiment": SUFFIX_TASKS["sentiment"]}
    _, _, paths = save_artifacts("gpt2", tokenizer_dir, tmp_path, specs)
    multitask = MultiTaskClassifier.from_pretrained(paths, model=str(tiny_model_dir))
    batch = multitask.tokenizer(TEXTS, padding=True, return_tensors="pt")
    logits = multitask.forward(batch.input_ids, batch.attention_mask, list(specs))
    for name in specs:
        torch.testing.assert_close(logits[name], alone(paths, name, "gpt2", tokenizer_dir), atol=1e-4, rtol=1e-4)
    assert multitask.tasks["sentiment"].to_dict() == {  # what the service lists at /v1/tasks
        "name": "sentiment", "task": "sentiment", "kind": "classification", "method": "suffix", "head": "linear",
        "labels": ["class0", "class1"], "prompt_length": 3, "pooling": "last", "text_columns": ["text"],
        "max_length": 128 - 3, "shared_cache": True, "artifact": str(paths["sentiment"]),
    }
    half = MultiTaskClassifier.from_pretrained({"sentiment": paths["sentiment"]}, model=str(tiny_model_dir), dtype=torch.bfloat16)
    assert half.backbone.dtype == torch.bfloat16

    backbone, tokenizer = make_backbone("gpt2", tokenizer_dir)  # one artifact, on a backbone the caller keeps using
    before = {n: p.clone() for n, p in backbone.named_parameters()}
    MultiTaskClassifier.from_pretrained({"lora": paths["lora"]}, backbone=backbone, tokenizer=tokenizer)
    assert {n for n, _ in backbone.named_parameters()} == set(before)
    assert all(torch.equal(p, before[n]) for n, p in backbone.named_parameters())


def test_text_pairs_and_single_texts_group_by_what_the_task_reads(tokenizer_dir, tmp_path):
    pair = Task(name="pair", text_columns=("premise", "hypothesis"), label_names=("no", "yes"), template="{premise} ? {hypothesis}")
    backbone, tokenizer = make_backbone("gpt2", tokenizer_dir)
    paths = save_artifacts("gpt2", tokenizer_dir, tmp_path, {"a": SUFFIX_TASKS["sentiment"], "b": SUFFIX_TASKS["topic"]})[2]
    classifier = Classifier.build(copy.deepcopy(backbone), tokenizer, pair, "suffix", SoftPromptConfig(prompt_length=3))
    classifier.save_pretrained(tmp_path / "pair")
    sentence = Task(name="sentence", text_columns=("sentence",), label_names=("x", "y"))
    Classifier.build(backbone, tokenizer, sentence, "suffix", SoftPromptConfig(prompt_length=2)).save_pretrained(tmp_path / "sentence")
    # loaded under a name of its own (task "pair" as "entail"): errors name what the user loaded
    multitask = MultiTaskClassifier.from_pretrained({**paths, "entail": tmp_path / "pair"}, backbone=backbone, tokenizer=tokenizer)
    other_column = MultiTaskClassifier.from_pretrained({**paths, "c": tmp_path / "sentence"}, backbone=backbone, tokenizer=tokenizer)
    passes = count_calls(backbone.base_model)
    other_column.classify(["one text", "and another"])
    assert len(passes) == 1  # columns "text" and "sentence" hold the same string: one pass serves all three
    rows = [{"text": "fine", "premise": "It rains.", "hypothesis": "The street is wet."}, {"text": "bad", "premise": "A", "hypothesis": "B"}]
    results = multitask.classify(rows)
    formatted = [tokenizer(text, return_tensors="pt").input_ids for text in ["It rains. ? The street is wet.", "A ? B"]]
    expected = torch.cat([classifier(ids, torch.ones_like(ids)).logits for ids in formatted]).softmax(-1)
    assert [r["entail"]["probabilities"]["yes"] for r in results] == pytest.approx(expected[:, 1].tolist(), abs=1e-5)
    assert list(results[0]) == ["a", "b", "entail"]
    passes = count_calls(backbone.base_model)
    multitask.classify(rows)
    assert len(passes) == 2  # "a" and "b" read the same text (in one pass); "entail" reads another
    assert list(multitask.classify(rows, tasks=["b"])[0]) == ["b"]
    passes = count_calls(backbone.base_model)
    assert list(multitask.classify(["just a string"], tasks=["b"])[0]) == ["b"]  # "entail", not asked, neither runs nor checks
    assert len(passes) == 1

    with pytest.raises(DataError, match=r"text 1: task 'entail' classifies text pairs; give an object with fields \['premise', 'hypothesis'\]"):
        multitask.classify(["just a string"])
    with pytest.raises(DataError, match=r"text 2: task 'entail' needs string field\(s\) \['hypothesis'\]"):
        multitask.classify([rows[0], {"text": "x", "premise": "p"}], tasks=["entail"])
    with pytest.raises(DataError, match="text 2 is empty"):
        multitask.classify(["ok", ""], tasks=["a"])


def test_refuses_artifacts_of_another_base_model_and_unknown_or_duplicate_tasks(tokenizer_dir, tmp_path):
    _, _, paths = save_artifacts("gpt2", tokenizer_dir, tmp_path / "seed0", {"a": SUFFIX_TASKS["sentiment"]})
    _, _, other = save_artifacts("gpt2", tokenizer_dir, tmp_path / "seed1", {"a": SUFFIX_TASKS["sentiment"]}, seed=1)
    backbone, tokenizer = make_backbone("gpt2", tokenizer_dir)
    with pytest.raises(ArtifactError, match=f"{other['a']} was trained on base model 'tiny-gpt2-seed1'"):
        MultiTaskClassifier.from_pretrained({"a": paths["a"], "b": other["a"]}, backbone=backbone, tokenizer=tokenizer)
    with pytest.raises(ConfigError, match="are both named 'a'; name them as NAME=DIR, e.g. a-a="):
        MultiTaskClassifier.from_pretrained([paths["a"], paths["a"]], backbone=backbone, tokenizer=tokenizer)
    multitask = MultiTaskClassifier.from_pretrained({"x": paths["a"], "y": paths["a"]}, backbone=backbone, tokenizer=tokenizer)
    with pytest.raises(ConfigError, match=r"unknown task\(s\) \['z'\]; loaded tasks are \['x', 'y'\]"):
        multitask.classify(["hi"], tasks=["x", "z"])
    both = multitask.classify(["hi"])[0]
    assert both["x"]["probabilities"] == pytest.approx(both["y"]["probabilities"], abs=1e-6)


def test_tasks_that_cut_the_same_rows_differently_each_read_their_own_cut(tokenizer_dir, tmp_path):
    backbone, tokenizer = make_backbone("gpt2", tokenizer_dir)
    texts = ["word " * 40 + "end", "short text", "another long sentence, " * 12]
    classifiers = {}
    for number, (name, max_length) in enumerate((("cut-at-8", 8), ("cut-at-64", 64))):
        torch.manual_seed(number)
        classifier = Classifier.build(backbone, tokenizer, toy_task(2), "suffix", SoftPromptConfig(prompt_length=3), max_length=max_length)
        with torch.no_grad():
            classifier.head.linear.weight.normal_()
        classifier.save_pretrained(tmp_path / name)
        classifiers[name] = (classifier, max_length)
    multitask = MultiTaskClassifier.from_pretrained({name: tmp_path / name for name in classifiers}, backbone=backbone, tokenizer=tokenizer)
    assert sorted(group.tasks for group in multitask.encode(texts)) == [["cut-at-64"], ["cut-at-8"]]
    results = multitask.classify(texts)
    for name, (classifier, max_length) in classifiers.items():
        cut = [torch.tensor([tokenizer(text).input_ids[:max_length]]) for text in texts]
        expected = torch.cat([classifier(ids, torch.ones_like(ids)).logits for ids in cut]).softmax(-1)
        got = torch.tensor([list(result[name]["probabilities"].values()) for result in results])
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
