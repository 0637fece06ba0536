"""Several label columns trained in one run: each task gets the gradients it would get alone, and its own artifact."""

import copy
import dataclasses
import json
import random

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_backbone, toy_task
from suffixtune import Classifier
from suffixtune.cli import main, merge_repeated
from suffixtune.errors import ConfigError
from suffixtune.methods.soft_prompt import SoftPromptConfig
from suffixtune.multitask import MultiTaskClassifier
from suffixtune.multitask.training import MultiTaskTrainingModel

TEXTS = ["a fine film", "it was dull and far too long", "wonderful", "no", "so-so at best, though well shot"]
# name: (method, prompt length, head, pooling, number of labels)
TASKS = {
    "sentiment": ("suffix", 3, "linear", "last", 2),
    "topic": ("suffix", 6, "verbalizer", "mean", 3),
    "score": ("suffix", 1, "linear", "last", 1),
    "probe": ("head", 0, "linear", "mean", 2),
}


def build_tasks(backbone, tokenizer):
    classifiers = {}
    for number, (name, (method, length, head, pooling, labels)) in enumerate(TASKS.items()):
        config = SoftPromptConfig(prompt_length=length) if method == "suffix" else None
        task = dataclasses.replace(toy_task(labels), name=name)
        classifiers[name] = Classifier.build(backbone, tokenizer, task, method, config, head, pooling=pooling)
        torch.manual_seed(number)
        with torch.no_grad():
            for param in classifiers[name].parameters():
                if param.requires_grad:
                    param.add_(torch.randn_like(param) * 0.3)
    return classifiers


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_each_task_gets_the_loss_and_gradients_it_gets_alone(tokenizer_dir, kind, padding_side):
    backbone, tokenizer = make_backbone(kind, tokenizer_dir, padding_side)
    model = MultiTaskTrainingModel(build_tasks(backbone, tokenizer)).train()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    labels = torch.tensor([[0, 2, 0.5, 1], [1, 0, 1.5, 0], [1, 1, 2.0, 1], [0, 2, 4.0, 0], [1, 0, 0.0, 1]])
    output = model(batch.input_ids, batch.attention_mask, labels)
    output.loss.backward()
    with torch.no_grad():
        unlabelled = model(batch.input_ids, batch.attention_mask)  # what prediction calls
    assert unlabelled.loss is None
    torch.testing.assert_close(unlabelled.logits, output.logits.detach())

    alone_losses, offset = [], 0
    for k, (name, classifier) in enumerate(model.tasks.items()):
        reference = copy.deepcopy(classifier)  # same trained values, on a backbone of its own
        reference.zero_grad(set_to_none=True)
        reference.frozen_text = False  # the plain full pass over [text | suffix] is the reference
        alone = reference(batch.input_ids, batch.attention_mask, labels[:, k])
        alone.loss.backward()
        alone_losses.append(alone.loss.detach())
        width = classifier.classifier_config.num_labels
        torch.testing.assert_close(output.logits[:, offset : offset + width], alone.logits, atol=1e-5, rtol=1e-4)
        offset += width
        mine = dict(classifier.named_parameters())
        for param_name, param in reference.named_parameters():
            if param.requires_grad:
                torch.testing.assert_close(mine[param_name].grad, param.grad, atol=1e-5, rtol=1e-4, msg=f"{name}: {param_name}")
    torch.testing.assert_close(output.loss.detach(), torch.stack(alone_losses).sum(), atol=1e-5, rtol=0)


def test_methods_before_the_text_cannot_share_the_pass(tokenizer_dir):
    backbone, tokenizer = make_backbone("gpt2", tokenizer_dir)
    classifiers = {"a": Classifier.build(backbone, tokenizer, toy_task(2), "prefix"), "b": Classifier.build(backbone, tokenizer, toy_task(2))}
    with pytest.raises(ConfigError, match="--method prefix cannot train several label columns in one run"):
        MultiTaskTrainingModel(classifiers)


def test_repeated_label_column_flags_are_merged():
    assert merge_repeated(["--label_column", "a", "--x", "1", "--label_column", "b"], "--label_column") == ["--x", "1", "--label_column", "a", "b"]
    assert merge_repeated(["--label-column", "a", "b"], "--label_column") == ["--label_column", "a", "b"]
    assert merge_repeated(["--x", "1"], "--label_column") == ["--x", "1"]


def write_two_label_csv(path, rows, seed):
    """Sentiment from one word group, topic (3 classes) from another, independent of each other."""
    rng = random.Random(seed)
    good, bad = ["great", "lovely", "superb"], ["awful", "boring", "dreadful"]
    topics = {"food": ["pizza", "soup"], "film": ["movie", "actor"], "sport": ["goal", "match"]}
    lines = ["text,sentiment,topic"]
    for i in range(rows):
        sentiment, topic = i % 2, list(topics)[(i // 2) % 3]
        words = rng.choices(good if sentiment else bad, k=2) + rng.choices(topics[topic], k=2)
        rng.shuffle(words)
        lines.append(f"{' '.join(words)},{'positive' if sentiment else 'negative'},{topic}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_two_label_columns_train_in_one_run_into_two_artifacts_served_together(tiny_model_dir, tmp_path, capsys):
    train = write_two_label_csv(tmp_path / "train.csv", 96, seed=0)
    validation = write_two_label_csv(tmp_path / "validation.csv", 30, seed=1)
    output = tmp_path / "run"
    assert main([
        "train", "--model", str(tiny_model_dir), "--train", str(train), "--validation", str(validation),
        "--text_column", "text", "--label_column", "sentiment", "--label_column", "topic", "--output", str(output),
        "--prompt_length", "4", "--num_train_epochs", "4", "--learning_rate", "3e-2", "--per_device_train_batch_size", "8",
        "--disable_tqdm", "true", "--seed", "0",
    ]) == 0
    record = json.loads((output / "metrics.json").read_text())
    assert set(record["tasks"]) == {"sentiment", "topic"} and record["status"] == "ok"
    losses = [epoch["eval_loss"] for epoch in record["tasks"]["topic"]["epochs"]]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert record["tasks"]["sentiment"]["eval"]["accuracy"] >= 0.8
    assert record["tasks"]["topic"]["config"]["label_names"] == ["film", "food", "sport"]
    distinct = {line.split(",")[0] for path in (train, validation) for line in path.read_text().splitlines()[1:]}
    cache = record["tasks"]["topic"]["text_cache"]  # each distinct text ran through the backbone once, for both tasks
    assert cache["misses"] == len(distinct) and cache["hits"] + len(distinct) == 4 * (96 + 30)

    for name in ("sentiment", "topic"):
        task_record = json.loads((output / name / "metrics.json").read_text())
        assert task_record["task"] == name and task_record["tasks_trained_together"] == ["sentiment", "topic"]
        assert set(load_file(output / name / "suffixtune_model.safetensors")) == {"method.prompt", "head.linear.weight", "head.linear.bias"}
    served = MultiTaskClassifier.from_pretrained([output / "sentiment", output / "topic"])
    texts = ["great lovely pizza soup", "awful goal match boring"]
    together = served.classify(texts)
    for name in ("sentiment", "topic"):
        alone = Classifier.from_pretrained(output / name).predict(texts)
        assert [row[name]["label"] for row in together] == [row["label"] for row in alone]
        for row, expected in zip(together, alone, strict=True):
            assert row[name]["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-5)
