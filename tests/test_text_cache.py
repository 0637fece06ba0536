"""The text cache: reads give what a fresh text pass gives, runs train the same with it, and bad caches are not read."""

import json
import logging

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_backbone, toy_task, write_toy_csv
from suffixtune import Classifier
from suffixtune.cli import main
from suffixtune.methods.soft_prompt import SoftPromptConfig
from suffixtune.text_cache import DiskStore, MemoryStore, TextCache, cache_cost, entry_bytes, open_text_cache

TEXTS = ["a fine film", "it was dull and far too long", "wonderful", "no", "so-so at best, though well shot"]


def open_cache(classifier, mode, token_counts, reused=True, **options):
    return open_text_cache(
        mode, classifier.backbone, classifier.tokenizer, classifier.classifier_config.max_length, token_counts,
        torch.float32, with_kv=True, reused=reused, **options,
    )


def suffix_classifier(kind, tokenizer_dir, method="suffix", pooling="last", seed=0):
    backbone, tokenizer = make_backbone(kind, tokenizer_dir, "left", seed=seed)
    config = SoftPromptConfig(prompt_length=3) if method == "suffix" else None
    return Classifier.build(backbone, tokenizer, toy_task(2), method, config, pooling=pooling), tokenizer


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("method,pooling", [("suffix", "last"), ("suffix", "mean"), ("head", "mean"), ("head", "last")])
def test_cached_batches_give_the_logits_and_gradients_of_a_fresh_pass(tokenizer_dir, tmp_path, kind, method, pooling):
    classifier, tokenizer = suffix_classifier(kind, tokenizer_dir, method, pooling)
    labels = torch.tensor([0, 1, 0, 1, 1])
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    fresh = classifier(batch.input_ids, batch.attention_mask, labels)
    fresh.loss.backward()
    fresh_grads = {n: p.grad.clone() for n, p in classifier.named_parameters() if p.requires_grad}
    for store in (MemoryStore(budget=10**9), DiskStore(tmp_path / kind / method / pooling, {"test": True})):
        classifier.text_cache = TextCache(store)
        for order in ([0, 1, 2], [4, 3, 2, 1, 0], [4, 3, 2, 1, 0]):  # first sight, then mixed, then all cached
            part = tokenizer([TEXTS[i] for i in order], padding=True, return_tensors="pt")
            classifier.zero_grad(set_to_none=True)
            output = classifier(part.input_ids, part.attention_mask, labels[order])
            output.loss.backward()
            torch.testing.assert_close(output.logits, fresh.logits[order], atol=1e-5, rtol=1e-5)
        store.flush()
        assert (classifier.text_cache.misses, classifier.text_cache.hits) == (3 + 2, 3 + 5)
        for name, grad in fresh_grads.items():
            torch.testing.assert_close(dict(classifier.named_parameters())[name].grad, grad, atol=1e-5, rtol=1e-4)


def test_disk_store_reopens_its_shards_and_rebuilds_a_damaged_one(tokenizer_dir, tmp_path, caplog):
    classifier, tokenizer = suffix_classifier("llama", tokenizer_dir)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = classifier.predict_logits(TEXTS)
        classifier.text_cache = TextCache(DiskStore(tmp_path, {"test": True}))
        classifier(batch.input_ids, batch.attention_mask)
        classifier.text_cache.flush()
        (shard,) = tmp_path.glob("shard-*.safetensors")
        assert len({name.split(".")[0] for name in load_file(shard)}) == len(TEXTS)

        reopened = TextCache(DiskStore(tmp_path, {"test": True}))
        classifier.text_cache = reopened
        torch.testing.assert_close(classifier(batch.input_ids, batch.attention_mask).logits[[0]], expected[[0]], atol=1e-5, rtol=0)
        assert (reopened.hits, reopened.misses) == (len(TEXTS), 0)

        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # half-written, as a crash mid-copy leaves it
        rebuilt = TextCache(DiskStore(tmp_path, {"test": True}))
        assert "is damaged" in caplog.text and not shard.exists()
        classifier.text_cache = rebuilt
        logits = classifier(batch.input_ids, batch.attention_mask).logits
        assert (rebuilt.hits, rebuilt.misses) == (0, len(TEXTS))
        rebuilt.flush()
        assert len(list(tmp_path.glob("shard-*.safetensors"))) == 1
    torch.testing.assert_close(logits, classifier.predict_logits(TEXTS), atol=1e-5, rtol=0)


def test_disk_cache_of_another_backbone_tokenizer_or_max_length_is_never_read(tokenizer_dir, tmp_path):
    def directory(classifier):
        return open_cache(classifier, "disk", [3, 4], directory=tmp_path).store.directory

    classifier, _ = suffix_classifier("gpt2", tokenizer_dir)
    base = directory(classifier)
    assert directory(suffix_classifier("gpt2", tokenizer_dir)[0]) == base  # same everything: the same cache
    assert directory(suffix_classifier("gpt2", tokenizer_dir, seed=1)[0]) != base  # other weights
    classifier.classifier_config.max_length = 17
    assert directory(classifier) != base
    classifier.classifier_config.max_length = suffix_classifier("gpt2", tokenizer_dir)[0].classifier_config.max_length
    classifier.tokenizer.add_tokens(["<extra>"])
    assert directory(classifier) != base
    assert json.loads((base / "cache.json").read_text())["max_length"] == 125


def test_cost_is_layers_times_two_times_kv_heads_times_head_dim_times_dtype(tokenizer_dir):
    classifier, _ = suffix_classifier("llama", tokenizer_dir)  # 2 layers, 2 key/value heads of dim 32 / 4 = 8
    cost = cache_cost(classifier.backbone, [10, 20], torch.bfloat16, with_kv=True)
    assert cost.bytes_per_token == 2 * 2 * 2 * 8 * 2 and cost.total == 30 * 128 + 2 * (2 * 32 * 4)
    assert cache_cost(classifier.backbone, [10, 20], torch.bfloat16, with_kv=False).total == 2 * 2 * 32 * 4


def test_auto_is_off_when_no_text_is_read_twice_and_says_where_it_keeps_the_cache(tokenizer_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="suffixtune")
    classifier, _ = suffix_classifier("gpt2", tokenizer_dir)
    assert open_cache(classifier, "auto", [5] * 10, reused=False) is None
    assert "every text is read once" in caplog.text
    assert isinstance(open_cache(classifier, "auto", [5] * 10).store, MemoryStore)
    on_disk = open_cache(classifier, "auto", [5] * 10, budget=100, directory=tmp_path)
    assert isinstance(on_disk.store, DiskStore) and "on disk at" in caplog.text
    assert open_cache(classifier, "off", [5]) is None


def test_explicit_cache_is_refused_where_the_text_does_not_run_apart(tiny_model_dir, tmp_path, capsys):
    for flags, reason in [(["--method", "prefix"], "--method prefix puts trainable state before"),
                          (["--frozen_text", "false"], "--frozen_text false runs every text with gradient")]:
        assert main(["train", "--model", str(tiny_model_dir), "--train", str(write_toy_csv(tmp_path / "t.csv")),
                     "--validation", str(tmp_path / "t.csv"), "--text_column", "text", "--output", str(tmp_path / "run"),
                     "--text_cache", "memory", *flags]) == 2
        assert f"--text_cache memory needs the frozen-text path, but {reason}" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("method", ["suffix", "head"])
def test_a_run_with_the_text_cache_trains_the_same_artifact_as_one_without(tiny_model_dir, tmp_path, method):
    train = write_toy_csv(tmp_path / "train.csv", rows=48, seed=0)
    validation = write_toy_csv(tmp_path / "validation.csv", rows=16, seed=1)
    artifacts, records = {}, {}
    for mode in ("off", "memory", "disk"):
        output = tmp_path / mode
        prompt = ["--prompt_length", "3"] if method == "suffix" else []
        assert main([
            "train", "--model", str(tiny_model_dir), "--train", str(train), "--validation", str(validation),
            "--text_column", "text", "--output", str(output), "--method", method, *prompt, "--num_train_epochs", "3",
            "--per_device_train_batch_size", "8", "--disable_tqdm", "true", "--seed", "0", "--learning_rate", "3e-2",
            "--text_cache", mode, "--text_cache_dir", str(tmp_path / "cache"),
        ]) == 0
        artifacts[mode] = load_file(output / "suffixtune_model.safetensors")
        records[mode] = json.loads((output / "metrics.json").read_text())
    distinct = {line.rsplit(",", 1)[0] for path in (train, validation) for line in path.read_text().splitlines()[1:]}
    for mode in ("memory", "disk"):
        assert records[mode]["text_cache"]["misses"] == len(distinct)  # each distinct text ran once, in epoch 1
        assert records[mode]["text_cache"]["hits"] + len(distinct) == 3 * (48 + 16)  # 3 epochs, 3 evaluations
        for name, tensor in artifacts["off"].items():
            torch.testing.assert_close(artifacts[mode][name], tensor, atol=1e-5, rtol=0)
        assert records[mode]["eval"] == pytest.approx(records["off"]["eval"], abs=1e-6)
    assert records["off"]["text_cache"] is None and records["off"]["text_pass"] == "frozen"


def test_a_text_twice_in_one_batch_is_kept_once(tokenizer_dir):
    classifier, tokenizer = suffix_classifier("gpt2", tokenizer_dir)
    store = MemoryStore(budget=10**9)
    classifier.text_cache = TextCache(store)
    batch = tokenizer(["same text", "same text", "other"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = classifier(batch.input_ids, batch.attention_mask).logits
    assert len(store.entries) == 2 and store.used == sum(entry_bytes(e) for e in store.entries.values())
    torch.testing.assert_close(logits[0], logits[1], atol=1e-6, rtol=0)


def test_activation_checkpointing_trains_through_the_full_pass_and_keeps_no_cache(tiny_model_dir, tmp_path):
    data = write_toy_csv(tmp_path / "t.csv", rows=16)
    assert main(["train", "--model", str(tiny_model_dir), "--train", str(data), "--validation", str(data),
                 "--text_column", "text", "--output", str(tmp_path / "run"), "--num_train_epochs", "2",
                 "--gradient_checkpointing", "true", "--disable_tqdm", "true"]) == 0
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["text_pass"] == "full" and record["text_cache"] is None
