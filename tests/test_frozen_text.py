"""The frozen-text path (text without gradient, then only the suffix) equals one full pass over [text | suffix]."""

import pytest
import torch

from conftest import make_backbone, toy_task
from suffixtune import Classifier
from suffixtune.methods.soft_prompt import SoftPromptConfig

TEXTS = ["a fine film", "it was dull and far too long, and the ending never came", "wonderful", "no", "so-so at best"]


def build(kind, tokenizer_dir, padding_side, method, prompt_length, head, pooling, num_labels=3):
    backbone, tokenizer = make_backbone(kind, tokenizer_dir, padding_side)
    config = SoftPromptConfig(prompt_length=prompt_length) if method == "suffix" else None
    classifier = Classifier.build(backbone, tokenizer, toy_task(num_labels), method, config, head, pooling=pooling)
    torch.manual_seed(1)
    with torch.no_grad():
        for param in classifier.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.3)  # away from the init, so nothing is trivially equal
    return classifier, tokenizer


def loss_and_grads(classifier, batch, labels, frozen_text):
    """Reference (frozen_text False): autograd through one pass over every position, as before this path existed."""
    classifier.frozen_text = frozen_text
    classifier.zero_grad(set_to_none=True)
    loss = classifier(batch.input_ids, batch.attention_mask, labels).loss
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in classifier.named_parameters() if p.requires_grad}


CASES = [
    # kind, padding side, method, P, head, pooling
    *[(kind, side, "suffix", p, "linear", "last") for kind in ("gpt2", "llama") for side in ("right", "left") for p in (1, 7)],
    *[(kind, side, "suffix", 7, "linear", "mean") for kind in ("gpt2", "llama") for side in ("right", "left")],
    *[(kind, "left", "suffix", p, "verbalizer", pooling) for kind in ("gpt2", "llama") for p in (1, 7) for pooling in ("last", "mean")],
    *[(kind, side, "head", 0, "linear", pooling) for kind in ("gpt2", "llama") for side in ("right", "left") for pooling in ("last", "mean")],
]


@pytest.mark.parametrize("kind,padding_side,method,prompt_length,head,pooling", CASES)
def test_frozen_text_loss_and_gradients_equal_the_full_pass(tokenizer_dir, kind, padding_side, method, prompt_length, head, pooling):
    classifier, tokenizer = build(kind, tokenizer_dir, padding_side, method, prompt_length, head, pooling)
    classifier.train()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    labels = torch.tensor([0, 1, 2, 1, 0])
    full_loss, full_grads = loss_and_grads(classifier, batch, labels, frozen_text=False)
    loss, grads = loss_and_grads(classifier, batch, labels, frozen_text=True)
    assert classifier.runs_text_apart()
    torch.testing.assert_close(loss, full_loss, atol=1e-5, rtol=0)
    expected = ({"method.prompt"} if method == "suffix" else set()) | ({"head.linear.weight", "head.linear.bias"} if head == "linear" else set())
    assert grads.keys() == full_grads.keys() == expected
    for name, grad in full_grads.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_frozen_text_never_runs_backward_through_the_text(tokenizer_dir):
    """Autograd sees only the P suffix positions: the text pass records no graph."""
    classifier, tokenizer = build("llama", tokenizer_dir, "right", "suffix", 4, "linear", "last")
    classifier.train()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    seen_lengths = []
    hook = classifier.backbone.base_model.layers[0].register_forward_hook(
        lambda module, args, output: seen_lengths.append((output[0] if isinstance(output, tuple) else output).shape[1])
    )
    loss = classifier(batch.input_ids, batch.attention_mask, torch.tensor([0, 1, 2, 1, 0])).loss
    hook.remove()
    assert seen_lengths == [batch.input_ids.shape[1], 4]  # the text once (no grad), then the 4 suffix positions
    assert loss.requires_grad


def test_gradient_accumulation_of_frozen_text_equals_one_full_batch(tokenizer_dir):
    """Two half batches through the frozen-text path sum to the full pass's gradient of the whole batch."""
    classifier, tokenizer = build("gpt2", tokenizer_dir, "left", "suffix", 5, "linear", "last")
    classifier.train()
    labels = torch.tensor([0, 1, 2, 1, 0])
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    _, full = loss_and_grads(classifier, batch, labels, frozen_text=False)
    classifier.frozen_text = True
    classifier.zero_grad(set_to_none=True)
    for rows in ([0, 1, 2], [3, 4]):
        half = tokenizer([TEXTS[i] for i in rows], padding=True, return_tensors="pt")
        (classifier(half.input_ids, half.attention_mask, labels[rows]).loss * len(rows) / len(TEXTS)).backward()
    for name, param in classifier.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param.grad, full[name], atol=1e-5, rtol=1e-4, msg=name)


def test_frozen_text_under_bf16_autocast_stays_close_and_fp32(tokenizer_dir):
    classifier, tokenizer = build("llama", tokenizer_dir, "right", "suffix", 4, "linear", "last")
    classifier.train()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    labels = torch.tensor([0, 1, 2, 1, 0])
    results = {}
    for frozen in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            results[frozen] = loss_and_grads(classifier, batch, labels, frozen)
    (loss, grads), (full_loss, full_grads) = results[True], results[False]
    assert loss.dtype == torch.float32 and grads["method.prompt"].dtype == torch.float32
    torch.testing.assert_close(loss, full_loss, atol=2e-2, rtol=0)
    cosine = torch.nn.functional.cosine_similarity(grads["method.prompt"].flatten(), full_grads["method.prompt"].flatten(), 0)
    assert cosine > 0.99


def test_inference_without_gradient_uses_one_full_pass(tokenizer_dir):
    classifier, tokenizer = build("gpt2", tokenizer_dir, "right", "suffix", 3, "linear", "last")
    with torch.no_grad():
        assert not classifier.runs_text_apart()
    assert classifier.runs_text_apart()
