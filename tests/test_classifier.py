"""What trains, what is saved, and what a saved artifact refuses."""

import hashlib
import importlib.metadata
import json
import re

import pytest
import torch
from safetensors import safe_open

from conftest import make_backbone, toy_task
from suffixtune import Classifier
from suffixtune.artifacts import CONFIG_NAME, WEIGHTS_NAME
from suffixtune.backbone import load_backbone, weights_hash
from suffixtune.classifier import length_sorted_batches
from suffixtune.errors import ArtifactError, ConfigError
from suffixtune.methods.soft_prompt import SoftPromptConfig
from suffixtune.tasks import TASKS, Task

TEXTS = ["a fine film", "it was dull and far too long", "wonderful", "no"]


@pytest.mark.parametrize("method", ["suffix", "prefix"])
def test_only_prompt_and_head_get_gradients(backbone, method):
    model, tokenizer = backbone
    classifier = Classifier.build(model, tokenizer, toy_task(3), method, SoftPromptConfig(prompt_length=4))
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    classifier(batch.input_ids, batch.attention_mask, torch.tensor([0, 1, 2, 1])).loss.backward()
    with_grad = {name for name, p in classifier.named_parameters() if p.grad is not None}
    assert with_grad == {"method.prompt", "head.linear.weight", "head.linear.bias"}
    assert set(classifier.trainable_state_dict()) == with_grad


@pytest.mark.parametrize("num_labels", [1, 2, 3, 5])
def test_label_counts_and_regression(backbone, num_labels):
    model, tokenizer = backbone
    classifier = Classifier.build(model, tokenizer, toy_task(num_labels))
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    labels = torch.tensor([0.5, 1.5, 2.0, 4.0]) if num_labels == 1 else torch.arange(4) % num_labels
    output = classifier(batch.input_ids, batch.attention_mask, labels)
    assert output.logits.shape == (4, num_labels)
    assert output.logits.dtype == torch.float32
    expected = (
        torch.nn.functional.mse_loss(output.logits.squeeze(-1), labels)
        if num_labels == 1
        else torch.nn.functional.cross_entropy(output.logits, labels)
    )
    torch.testing.assert_close(output.loss, expected)
    results = classifier.predict(TEXTS)
    if num_labels == 1:
        assert set(results[0]) == {"value"}
    else:
        assert set(results[0]["probabilities"]) == set(toy_task(num_labels).label_names)
        assert sum(results[0]["probabilities"].values()) == pytest.approx(1.0)


@pytest.mark.parametrize("batch_size,calls", [(1, 4), (3, 2), (64, 1)])
def test_predict_runs_in_batches_of_the_size_it_is_given(backbone, batch_size, calls):
    model, tokenizer = backbone
    classifier = Classifier.build(model, tokenizer, toy_task(2), "suffix", SoftPromptConfig(prompt_length=2))
    batch_sizes = []
    hook = model.base_model.register_forward_hook(
        lambda module, args, kwargs, output: batch_sizes.append(len(kwargs["inputs_embeds"])), with_kwargs=True
    )
    classifier.predict(TEXTS, batch_size=batch_size)
    hook.remove()
    assert len(batch_sizes) == calls and max(batch_sizes) == min(batch_size, len(TEXTS))


def test_batches_hold_rows_of_similar_length(backbone):
    _, tokenizer = backbone
    rows = [[5] * 7, [6], [7] * 3, [8] * 2, [9] * 6]
    batches = [(chunk, batch["input_ids"].shape) for chunk, batch in length_sorted_batches(tokenizer, rows, 2, "cpu")]
    assert batches == [([1, 3], (2, 2)), ([2, 4], (2, 6)), ([0], (1, 7))]


def test_verbalizer_refuses_regression(backbone):
    model, tokenizer = backbone
    with pytest.raises(ConfigError, match="regression.*--head linear"):
        Classifier.build(model, tokenizer, toy_task(1), head="verbalizer")


@pytest.mark.parametrize("method", ["suffix", "prefix"])
@pytest.mark.parametrize("head", ["linear", "verbalizer"])
def test_save_load_gives_identical_predictions(backbone, tmp_path, method, head):
    model, tokenizer = backbone
    classifier = Classifier.build(model, tokenizer, toy_task(2), method, SoftPromptConfig(prompt_length=3), head)
    with torch.no_grad():
        for p in classifier.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)  # make sure trained values, not the init, are what loads
    directory = tmp_path / "runs" / "model"  # parents are made, as transformers' save_pretrained makes them
    classifier.save_pretrained(directory)
    assert sorted(p.name for p in directory.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    reloaded = Classifier.from_pretrained(directory, backbone=model, tokenizer=tokenizer)
    torch.testing.assert_close(reloaded.predict_logits(TEXTS), classifier.predict_logits(TEXTS), atol=0, rtol=0)


def test_a_saved_artifact_reads_its_tasks_files_as_training_did(backbone, tmp_path):
    model, tokenizer = backbone
    Classifier.build(model, tokenizer, TASKS["mrpc"], "suffix", SoftPromptConfig(prompt_length=2)).save_pretrained(tmp_path / "mrpc")
    task = Classifier.from_pretrained(tmp_path / "mrpc", backbone=model, tokenizer=tokenizer).classifier_config.as_task()
    assert (task.name, task.text_columns, task.label_column, task.label_names) == (
        "mrpc", ("sentence1", "sentence2"), "label", ("not_equivalent", "equivalent"))
    assert (task.template, task.metrics, task.label_words) == (
        "Sentence 1: {sentence1}\nSentence 2: {sentence2}", ("f1", "accuracy"), (" no", " yes"))
    assert task.rename == {"#1 String": "sentence1", "#2 String": "sentence2", "Quality": "label"}  # GLUE's MRPC TSV
    custom = Task(name="reviews", text_columns=("review",), label_column="stars", label_names=("1", "2"))
    Classifier.build(model, tokenizer, custom).save_pretrained(tmp_path / "custom")  # --label_column stars
    task = Classifier.from_pretrained(tmp_path / "custom", backbone=model, tokenizer=tokenizer).classifier_config.as_task()
    assert (task.name, task.text_columns, task.label_column) == ("reviews", ("review",), "stars")


def test_build_cuts_texts_where_train_does_by_default(tokenizer_dir):
    model, tokenizer = make_backbone("gpt2", tokenizer_dir)
    model.config.n_positions = 1024  # GPT-2's own context: room for more than the default
    classifier = Classifier.build(model, tokenizer, toy_task(2), "suffix", SoftPromptConfig(prompt_length=2))
    assert classifier.classifier_config.max_length == 256  # `suffixtune train --max_length`'s default


def test_artifact_is_only_what_trained(backbone, tmp_path):
    model, tokenizer = backbone
    classifier = Classifier.build(model, tokenizer, toy_task(2), "suffix", SoftPromptConfig(prompt_length=20))
    classifier.save_pretrained(tmp_path)
    hidden = model.get_input_embeddings().embedding_dim
    expected_floats = 20 * hidden + hidden * 2 + 2
    assert (tmp_path / WEIGHTS_NAME).stat().st_size < expected_floats * 4 + 1024
    # the "format" transformers' loader checks, and a digest of the bytes that artifacts saved earlier must still match
    with safe_open(tmp_path / WEIGHTS_NAME, "pt") as saved:
        metadata, tensors = saved.metadata(), {name: saved.get_tensor(name) for name in saved.keys()}
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(tensors):
        digest.update(f"{name}:torch.float32:{list(tensors[name].shape)};".encode() + tensors[name].numpy().tobytes())
    assert metadata["format"] == "pt" and metadata["suffixtune_weights"] == digest.hexdigest()
    saved = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert saved["suffixtune_version"] == importlib.metadata.version("suffixtune")  # which release wrote it


def test_wrong_base_model_is_refused(tokenizer_dir, tmp_path):
    model, tokenizer = make_backbone("gpt2", tokenizer_dir, seed=0)
    Classifier.build(model, tokenizer, toy_task(2)).save_pretrained(tmp_path)
    other, other_tokenizer = make_backbone("gpt2", tokenizer_dir, seed=1)
    with pytest.raises(ArtifactError, match=re.escape(f"{tmp_path} was trained on base model 'tiny-gpt2-seed0'")):
        Classifier.from_pretrained(tmp_path, backbone=other, tokenizer=other_tokenizer)
    llama, llama_tokenizer = make_backbone("llama", tokenizer_dir)
    with pytest.raises(ArtifactError, match="hidden size"):
        Classifier.from_pretrained(tmp_path, backbone=llama, tokenizer=llama_tokenizer)


def test_from_pretrained_loads_the_recorded_base_model_in_the_dtype_asked_for(tiny_model_dir, tmp_path):
    model, tokenizer = load_backbone(str(tiny_model_dir))
    classifier = Classifier.build(model, tokenizer, toy_task(2), "suffix", SoftPromptConfig(prompt_length=2))
    classifier.save_pretrained(tmp_path)
    loaded = Classifier.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert loaded.backbone.dtype == torch.bfloat16
    assert loaded.method.prompt.dtype == loaded.head.linear.weight.dtype == torch.float32
    for got, expected in zip(loaded.predict(TEXTS), classifier.predict(TEXTS), strict=True):  # the prompt joins the text in bfloat16
        assert list(got["probabilities"].values()) == pytest.approx(list(expected["probabilities"].values()), abs=0.02)


def test_weights_hash_ignores_load_dtype(tokenizer_dir):
    model, _ = make_backbone("llama", tokenizer_dir)
    fp32 = weights_hash(model)
    bf16 = make_backbone("llama", tokenizer_dir)[0].to(torch.bfloat16)
    assert weights_hash(bf16) == fp32
    assert weights_hash(make_backbone("llama", tokenizer_dir, seed=3)[0]) != fp32


def test_long_text_is_cut_never_the_prompt(backbone):
    model, tokenizer = backbone
    classifier = Classifier.build(model, tokenizer, toy_task(2), "suffix", SoftPromptConfig(prompt_length=8))
    assert classifier.classifier_config.max_length == model.config.max_position_embeddings - 8
    long_text = "word " * 1000
    result = classifier.predict([long_text, "short"])
    assert len(result) == 2
    cut = tokenizer(long_text).input_ids[: classifier.classifier_config.max_length]
    ids = torch.tensor([cut])
    torch.testing.assert_close(classifier(ids, torch.ones_like(ids)).logits[0].softmax(-1),
                               torch.tensor(list(result[0]["probabilities"].values())))


def test_bf16_backbone_keeps_prompt_head_and_loss_fp32(tokenizer_dir):
    model, tokenizer = make_backbone("llama", tokenizer_dir)
    model.to(torch.bfloat16)
    classifier = Classifier.build(model, tokenizer, toy_task(2), "suffix", SoftPromptConfig(prompt_length=4))
    assert classifier.method.prompt.dtype == classifier.head.linear.weight.dtype == torch.float32
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = classifier(batch.input_ids, batch.attention_mask, torch.tensor([0, 1, 0, 1]))
    assert output.logits.dtype == output.loss.dtype == torch.float32
    output.loss.backward()
    assert classifier.method.prompt.grad.dtype == torch.float32
    assert torch.isfinite(classifier.method.prompt.grad).all()


def test_config_records_num_labels(backbone, tmp_path):
    import json

    model, tokenizer = backbone
    Classifier.build(model, tokenizer, toy_task(3)).save_pretrained(tmp_path)
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert config["num_labels"] == 3 and config["label_names"] == ["class0", "class1", "class2"]
    assert config["method"] == "suffix" and config["method_config"]["prompt_length"] == 20


def test_another_tokenizer_is_refused(tokenizer_dir, tmp_path):
    from transformers import GPT2TokenizerFast

    model, tokenizer = make_backbone("gpt2", tokenizer_dir)
    classifier = Classifier.build(model, tokenizer, toy_task(2))
    classifier.save_pretrained(tmp_path)
    prefixed = GPT2TokenizerFast.from_pretrained(tokenizer_dir, add_prefix_space=True)
    assert prefixed("great").input_ids != tokenizer("great").input_ids  # the same text, other ids
    with pytest.raises(ArtifactError, match="was trained with another tokenizer .*add_prefix_space"):
        Classifier.from_pretrained(tmp_path, backbone=model, tokenizer=prefixed)
    left = GPT2TokenizerFast.from_pretrained(tokenizer_dir, padding_side="left", pad_token="<|endoftext|>")
    left(TEXTS, padding=True, truncation=True, max_length=8)  # padding and truncation settings are not the tokenizer
    loaded = Classifier.from_pretrained(tmp_path, backbone=model, tokenizer=left)
    torch.testing.assert_close(loaded.predict_logits(TEXTS), classifier.predict_logits(TEXTS), atol=1e-5, rtol=0)


def test_weights_hash_follows_training_in_place(tokenizer_dir, tmp_path):
    model, tokenizer = make_backbone("gpt2", tokenizer_dir)
    before = weights_hash(model)
    Classifier.build(model, tokenizer, toy_task(2)).save_pretrained(tmp_path)
    with torch.no_grad():  # what an optimizer step of full fine-tuning does to the shared backbone
        model.transformer.h[0].mlp.c_fc.weight.add_(0.5)
    changed = make_backbone("gpt2", tokenizer_dir)[0]
    with torch.no_grad():
        changed.transformer.h[0].mlp.c_fc.weight.add_(0.5)
    assert weights_hash(model) != before and weights_hash(model) == weights_hash(changed)
    with pytest.raises(ArtifactError, match="was trained on base model"):
        Classifier.from_pretrained(tmp_path, backbone=model, tokenizer=tokenizer)


def test_edited_or_damaged_artifacts_are_refused(tokenizer_dir, tmp_path):
    import json

    from safetensors.torch import load_file, save_file

    from suffixtune.artifacts import config_digest

    model, tokenizer = make_backbone("gpt2", tokenizer_dir)
    Classifier.build(model, tokenizer, toy_task(2), "suffix", SoftPromptConfig(prompt_length=4)).save_pretrained(tmp_path)
    config, weights = json.loads((tmp_path / CONFIG_NAME).read_text()), (tmp_path / WEIGHTS_NAME).read_bytes()

    (tmp_path / CONFIG_NAME).write_text(json.dumps({**config, "method": "prefix"}))
    with pytest.raises(ArtifactError, match="suffixtune_config.json is not the config these weights were saved with"):
        Classifier.from_pretrained(tmp_path, backbone=model, tokenizer=tokenizer)
    (tmp_path / CONFIG_NAME).write_text(json.dumps({**config, "base_model": "/elsewhere/tiny-gpt2", "suffixtune_version": "9.9"}))
    Classifier.from_pretrained(tmp_path, backbone=model, tokenizer=tokenizer)  # a moved base model is fine: its weights are hashed
    older = {k: v for k, v in config.items() if k != "tokenizer_hash"}  # as a version before that field saved it
    (tmp_path / CONFIG_NAME).write_text(json.dumps(older))
    save_file(load_file(tmp_path / WEIGHTS_NAME), tmp_path / WEIGHTS_NAME, metadata={"format": "pt", "suffixtune_config": config_digest(older)})
    Classifier.from_pretrained(tmp_path, backbone=model, tokenizer=tokenizer)  # the hash is of the file's own fields
    (tmp_path / WEIGHTS_NAME).write_bytes(weights)
    (tmp_path / CONFIG_NAME).write_text(json.dumps(config))

    state = load_file(tmp_path / WEIGHTS_NAME)
    save_file({**state, "method.prompt": torch.full_like(state["method.prompt"], float("nan"))}, tmp_path / WEIGHTS_NAME)
    with pytest.raises(ArtifactError, match="tensor 'method.prompt' holds NaN or infinite values"):
        Classifier.from_pretrained(tmp_path, backbone=model, tokenizer=tokenizer)
    save_file({**state, "method.prompt": torch.zeros(6, 32)}, tmp_path / WEIGHTS_NAME)  # no binding, as before this check
    with pytest.raises(ArtifactError, match=r"tensor 'method.prompt' has shape \[6, 32\], the config's method needs \[4, 32\]"):
        Classifier.from_pretrained(tmp_path, backbone=model, tokenizer=tokenizer)
    (tmp_path / WEIGHTS_NAME).write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ArtifactError, match="suffixtune_model.safetensors: the artifact's weights are damaged"):
        Classifier.from_pretrained(tmp_path, backbone=model, tokenizer=tokenizer)
    flipped = bytearray(weights)
    flipped[-4] ^= 1  # the lowest mantissa bit of the last float: finite, the right shape, and predicted with before
    (tmp_path / WEIGHTS_NAME).write_bytes(bytes(flipped))
    with pytest.raises(ArtifactError, match="suffixtune_model.safetensors: the tensors are not the bytes that were saved"):
        Classifier.from_pretrained(tmp_path, backbone=model, tokenizer=tokenizer)


def test_a_config_without_a_field_or_with_a_newer_one_names_them(tmp_path):
    import json

    from suffixtune.artifacts import read_config

    (tmp_path / CONFIG_NAME).write_text(json.dumps({"base_model": "m", "hidden_size": 8, "dropped_in_2030": 1}))
    with pytest.raises(ArtifactError, match=r"malformed artifact config \(missing field\(s\) \['base_model_hash', 'method', "
                                            r".*; unknown field\(s\) \['dropped_in_2030'\] \(written by a newer suffixtune\?\)\)$"):
        read_config(tmp_path)
    (tmp_path / CONFIG_NAME).write_text("[1, 2]")
    with pytest.raises(ArtifactError, match=r"malformed artifact config \(a JSON list, not an object\)$"):
        read_config(tmp_path)


def test_no_room_for_the_text_is_refused_before_training(backbone):
    model, tokenizer = backbone  # 128 positions
    with pytest.raises(ConfigError, match="adds 128 positions, and the model holds 128, leaving 0 for the text"):
        Classifier.build(model, tokenizer, toy_task(2), "suffix", SoftPromptConfig(prompt_length=128))
    with pytest.raises(ConfigError, match="adds 100000 positions, and the model holds 128, leaving -99872"):
        Classifier.build(model, tokenizer, toy_task(2), "prefix", SoftPromptConfig(prompt_length=100000))
    with pytest.raises(ConfigError, match="--max_length 0 leaves no room for the text"):
        Classifier.build(model, tokenizer, toy_task(2), "suffix", SoftPromptConfig(prompt_length=4), max_length=0)
    assert Classifier.build(model, tokenizer, toy_task(2), "suffix", SoftPromptConfig(prompt_length=127)).classifier_config.max_length == 1
    assert Classifier.build(model, tokenizer, toy_task(2), "suffix", max_length=1).classifier_config.max_length == 1
    with pytest.raises(ConfigError, match="adds 128 positions"):  # a text of 1 fits --max_length, not the model
        Classifier.build(model, tokenizer, toy_task(2), "suffix", SoftPromptConfig(prompt_length=128), max_length=1)
