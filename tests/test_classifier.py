"""What trains, what is saved, and what a saved artifact refuses."""

import pytest
import torch

from conftest import make_backbone, toy_task
from suffixtune import Classifier
from suffixtune.artifacts import CONFIG_NAME, WEIGHTS_NAME
from suffixtune.backbone import weights_hash
from suffixtune.errors import ArtifactError, ConfigError
from suffixtune.methods.soft_prompt import SoftPromptConfig

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
    classifier.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    reloaded = Classifier.from_pretrained(tmp_path, backbone=model, tokenizer=tokenizer)
    torch.testing.assert_close(reloaded.predict_logits(TEXTS), classifier.predict_logits(TEXTS), atol=0, rtol=0)


def test_artifact_is_only_what_trained(backbone, tmp_path):
    model, tokenizer = backbone
    classifier = Classifier.build(model, tokenizer, toy_task(2), "suffix", SoftPromptConfig(prompt_length=20))
    classifier.save_pretrained(tmp_path)
    hidden = model.get_input_embeddings().embedding_dim
    expected_floats = 20 * hidden + hidden * 2 + 2
    assert (tmp_path / WEIGHTS_NAME).stat().st_size < expected_floats * 4 + 1024


def test_wrong_base_model_is_refused(tokenizer_dir, tmp_path):
    model, tokenizer = make_backbone("gpt2", tokenizer_dir, seed=0)
    Classifier.build(model, tokenizer, toy_task(2)).save_pretrained(tmp_path)
    other, other_tokenizer = make_backbone("gpt2", tokenizer_dir, seed=1)
    with pytest.raises(ArtifactError, match="was trained on base model 'tiny-gpt2-seed0'"):
        Classifier.from_pretrained(tmp_path, backbone=other, tokenizer=other_tokenizer)
    llama, llama_tokenizer = make_backbone("llama", tokenizer_dir)
    with pytest.raises(ArtifactError, match="hidden size"):
        Classifier.from_pretrained(tmp_path, backbone=llama, tokenizer=llama_tokenizer)


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
