"""Batched suffix/prefix placement equals running each text alone, and matches PEFT's prompt tuning."""

import pytest
import torch
from peft import PromptTuningConfig, get_peft_model

from conftest import make_backbone, toy_task
from suffixtune import Classifier
from suffixtune.methods.base import place_prompt
from suffixtune.methods.soft_prompt import SoftPromptConfig, prompt_token_ids

TEXTS = [
    "A gripping, beautifully shot film.",
    "Dull.",
    "The plot wanders, the acting is wooden, and the ending never arrives at all.",
    "Not bad",
]


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("method", ["suffix", "prefix"])
@pytest.mark.parametrize("head", ["linear", "verbalizer"])
def test_batched_logits_equal_each_row_built_by_hand(tokenizer_dir, kind, padding_side, method, head):
    """The reference owes nothing to place_prompt: each text's embeddings and the prompt joined with torch.cat, unpadded."""
    backbone, tokenizer = make_backbone(kind, tokenizer_dir, padding_side)
    classifier = Classifier.build(backbone, tokenizer, toy_task(3), method, SoftPromptConfig(prompt_length=5, prompt_init="random"), head)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert (batch.attention_mask == 0).any()
    frozen_text = classifier(batch.input_ids, batch.attention_mask).logits  # suffix with gradient: the text pass apart
    with torch.no_grad():
        full_pass = classifier(batch.input_ids, batch.attention_mask).logits
        prompt = classifier.method.prompt
        for i, text in enumerate(TEXTS):
            embeds = backbone.get_input_embeddings()(torch.tensor(tokenizer(text).input_ids))
            sequence = torch.cat([embeds, prompt] if method == "suffix" else [prompt, embeds])
            last = backbone.base_model(inputs_embeds=sequence[None]).last_hidden_state[:, -1]
            expected = classifier.head(last)[0]
            torch.testing.assert_close(full_pass[i], expected, atol=1e-5, rtol=0)
            torch.testing.assert_close(frozen_text[i].detach(), expected, atol=1e-5, rtol=0)


def test_suffix_positions_continue_each_text(tokenizer_dir):
    embeds = torch.arange(2 * 4, dtype=torch.float32).reshape(2, 4, 1)
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])  # left padding
    prompt = torch.tensor([[100.0], [101.0]])
    placed = place_prompt(embeds, mask, prompt, before_text=False)
    assert placed.inputs_embeds[0, :, 0].tolist() == [2, 3, 100, 101, 0, 1]
    assert placed.inputs_embeds[1, :, 0].tolist() == [4, 5, 6, 7, 100, 101]
    assert placed.pool_index.tolist() == [3, 5]
    assert placed.position_ids[0, :4].tolist() == [0, 1, 2, 3]
    prefixed = place_prompt(embeds, mask, prompt, before_text=True)
    assert prefixed.inputs_embeds[0, :, 0].tolist() == [100, 101, 2, 3, 0, 1]
    assert prefixed.pool_index.tolist() == [3, 5]


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_prefix_matches_peft_prompt_tuning(tokenizer_dir, kind):
    backbone, tokenizer = make_backbone(kind, tokenizer_dir, "right")
    classifier = Classifier.build(
        backbone, tokenizer, toy_task(2), "prefix", SoftPromptConfig(prompt_length=4, prompt_init="random"), "verbalizer"
    )
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    ours = classifier(batch.input_ids, batch.attention_mask).logits

    peft_model = get_peft_model(backbone, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.copy_(classifier.method.prompt)
    lm_logits = peft_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    pool = batch.attention_mask.sum(1) + 4 - 1
    word_ids = classifier.head.token_ids
    theirs = lm_logits[torch.arange(len(TEXTS)), pool][:, word_ids]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_a_fallback_to_random_init_is_what_the_artifact_records(tokenizer_dir):
    from suffixtune.tasks import Task

    model, tokenizer = make_backbone("gpt2", tokenizer_dir)
    bare = Task(name="bare", text_columns=("text",), label_names=("a", "b"))  # no prompt text to start from
    classifier = Classifier.build(model, tokenizer, bare, "suffix", SoftPromptConfig(prompt_length=3, prompt_init="text"))
    assert classifier.classifier_config.method_config["prompt_init"] == "random"


@pytest.mark.parametrize("bos", [False, True])
def test_a_text_init_cycles_the_texts_own_tokens(tokenizer_dir, bos):
    from transformers import GPT2TokenizerFast

    tokenizer = GPT2TokenizerFast.from_pretrained(tokenizer_dir, add_bos_token=bos)
    assert prompt_token_ids(tokenizer, " Answer:", 5).tolist() == [23998, 25, 23998, 25, 23998]  # "ĠAnswer", ":"; no BOS
