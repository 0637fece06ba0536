"""suffix-lora: LoRA at the suffix positions only, checked against PEFT's Activated LoRA and the frozen model."""

import copy
import dataclasses

import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model

from conftest import make_backbone, toy_task
from suffixtune import Classifier
from suffixtune.methods.soft_prompt import SoftPromptConfig
from suffixtune.methods.suffix_lora import SuffixLoraConfig
from suffixtune.multitask import MultiTaskClassifier

TEXTS = ["a fine film", "it was dull and far too long, and the ending never came", "wonderful", "no", "so-so at best"]


def build(kind, tokenizer_dir, padding_side="right", prompt_length=4, dropout=0.0, seed=1):
    backbone, tokenizer = make_backbone(kind, tokenizer_dir, padding_side)
    config = SuffixLoraConfig(prompt_length=prompt_length, lora_r=4, lora_alpha=8, lora_dropout=dropout)
    classifier = Classifier.build(backbone, tokenizer, toy_task(3), "suffix-lora", config)
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in classifier.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.3)  # B away from zero, so the updates are not trivially absent
    return classifier, tokenizer


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_equals_peft_activated_lora_and_leaves_the_text_to_the_frozen_model(tokenizer_dir, kind):
    classifier, tokenizer = build(kind, tokenizer_dir)
    classifier.eval()
    reference = copy.deepcopy(classifier.backbone)
    for hook in reference.modules():
        hook._forward_hooks.clear()  # the copy without our hooks: the frozen model
    frozen = copy.deepcopy(reference)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=classifier.method.config.lora_target_modules, fan_in_fan_out=kind == "gpt2",
                        alora_invocation_tokens=[0], task_type="CAUSAL_LM")
    inject_adapter_in_model(config, reference)
    with torch.no_grad():
        for name, module in reference.named_modules():
            if hasattr(module, "lora_A") and "default" in module.lora_A:
                key = name.replace(".", "__")
                module.lora_A["default"].weight.copy_(classifier.method.lora_A[key])
                module.lora_B["default"].weight.copy_(classifier.method.lora_B[key])

    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    inputs = classifier.method(classifier.backbone.get_input_embeddings()(batch.input_ids), batch.attention_mask)
    with torch.no_grad(), classifier.method.adapting(inputs):
        ours = classifier.backbone.base_model(inputs_embeds=inputs.inputs_embeds, position_ids=inputs.position_ids).last_hidden_state
    width = inputs.inputs_embeds.shape[1]
    offsets = (width - (inputs.pool_index - 3)).tolist()  # aLoRA adapts the last `offset` positions of each row
    hooks = [m.register_forward_pre_hook(lambda m, a, k: (a, {**k, "alora_offsets": offsets}), with_kwargs=True)
             for m in reference.modules() if hasattr(m, "lora_variant") and m.lora_variant]
    with torch.no_grad():
        peft = reference.base_model(inputs_embeds=inputs.inputs_embeds, position_ids=inputs.position_ids).last_hidden_state
        base = frozen.base_model(inputs_embeds=inputs.inputs_embeds, position_ids=inputs.position_ids).last_hidden_state
    for hook in hooks:
        hook.remove()
    lengths = batch.attention_mask.sum(1)
    for row, length in enumerate(lengths.tolist()):
        real = slice(0, length + 4)
        torch.testing.assert_close(ours[row, real], peft[row, real], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours[row, :length], base[row, :length], atol=1e-6, rtol=0)  # the text: frozen
        assert (ours[row, length : length + 4] - base[row, length : length + 4]).abs().max() > 1e-2  # the suffix: adapted


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_frozen_text_path_equals_the_full_pass(tokenizer_dir, kind, padding_side):
    classifier, tokenizer = build(kind, tokenizer_dir, padding_side)
    classifier.train()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    labels = torch.tensor([0, 1, 2, 1, 0])
    results = {}
    for frozen_text in (False, True):
        classifier.frozen_text = frozen_text
        classifier.zero_grad(set_to_none=True)
        loss = classifier(batch.input_ids, batch.attention_mask, labels).loss
        loss.backward()
        results[frozen_text] = loss.detach(), {n: p.grad.clone() for n, p in classifier.named_parameters() if p.requires_grad}
    (full_loss, full_grads), (loss, grads) = results[False], results[True]
    torch.testing.assert_close(loss, full_loss, atol=1e-5, rtol=0)
    assert grads.keys() == full_grads.keys()
    assert any(name.startswith("method.lora_B.") for name in grads) and "method.prompt" in grads
    for name, grad in full_grads.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_batched_equals_alone_and_save_load_is_exact(tokenizer_dir, tmp_path, kind):
    classifier, tokenizer = build(kind, tokenizer_dir)
    batched = classifier.predict_logits(TEXTS, batch_size=5)
    alone = torch.cat([classifier.predict_logits([text]) for text in TEXTS])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)
    classifier.save_pretrained(tmp_path)
    backbone, tokenizer = make_backbone(kind, tokenizer_dir)
    loaded = Classifier.from_pretrained(tmp_path, backbone=backbone, tokenizer=tokenizer)
    torch.testing.assert_close(loaded.predict_logits(TEXTS), batched, atol=1e-6, rtol=0)


@pytest.mark.parametrize("text_pass", ["packed", "cached"])
def test_shares_one_text_pass_with_other_suffix_tasks(tokenizer_dir, tmp_path, text_pass):
    specs = {"lora-a": ("suffix-lora", SuffixLoraConfig(prompt_length=3, lora_r=2)),
             "plain": ("suffix", SoftPromptConfig(prompt_length=5)),
             "lora-b": ("suffix-lora", SuffixLoraConfig(prompt_length=2, lora_r=4))}
    backbone, tokenizer = make_backbone("llama", tokenizer_dir)
    paths = {}
    for number, (name, (method, config)) in enumerate(specs.items()):
        task = dataclasses.replace(toy_task(2), name=name)
        classifier = Classifier.build(copy.deepcopy(backbone), tokenizer, task, method, config)
        torch.manual_seed(10 + number)
        with torch.no_grad():
            for param in classifier.parameters():
                if param.requires_grad:
                    param.add_(torch.randn_like(param) * 0.3)
        paths[name] = tmp_path / name
        classifier.save_pretrained(paths[name])
    multitask = MultiTaskClassifier.from_pretrained(paths, backbone=backbone, tokenizer=tokenizer, text_pass=text_pass)
    assert all(info.shared_cache for info in multitask.tasks.values())
    text_passes = []
    backbone.base_model.register_forward_hook(lambda module, args, kwargs, output: text_passes.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    logits = multitask.forward(batch.input_ids, batch.attention_mask, list(specs))
    assert text_passes.count(batch.input_ids.shape[1]) == 1  # one pass over the texts, then only suffix positions
    for name in specs:
        fresh, tokenizer = make_backbone("llama", tokenizer_dir)
        expected = Classifier.from_pretrained(paths[name], backbone=fresh, tokenizer=tokenizer).predict_logits(TEXTS)
        torch.testing.assert_close(logits[name], expected, atol=1e-5, rtol=1e-5)


def test_trains_through_suffixtune_train_and_only_its_own_weights_change(tiny_model_dir, tmp_path):
    from conftest import write_toy_csv
    from suffixtune.training import DataArguments, MethodArguments, ModelArguments, TrainingArguments, train

    data = write_toy_csv(tmp_path / "train.csv", rows=64)
    record = train(
        ModelArguments(model=str(tiny_model_dir)),
        DataArguments(train=str(data), validation=str(data), text_column="text"),
        MethodArguments(method="suffix-lora"),
        SuffixLoraConfig(prompt_length=2, lora_r=2),
        TrainingArguments(output_dir=str(tmp_path / "run"), num_train_epochs=3, per_device_train_batch_size=8,
                          learning_rate=1e-2, disable_tqdm=True, save_strategy="no", load_best_model_at_end=False, logging_steps=4),
    )
    losses = [entry["loss"] for entry in record["train_log"]]
    assert losses[-1] < losses[0]
    assert record["text_pass"] == "frozen"
    assert record["trainable_parameters"] == 2 * 32 + 2 * (2 * 32 + 96 * 2) + 2 * 32 + 2  # prompt, A and B per c_attn, head


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_starts_as_peft_starts_lora(tokenizer_dir, kind):
    backbone, tokenizer = make_backbone(kind, tokenizer_dir)
    config = SuffixLoraConfig(prompt_length=4, lora_r=4, lora_alpha=8)
    method = Classifier.build(backbone, tokenizer, toy_task(3), "suffix-lora", config).method
    assert method.lora_A and method.lora_A.keys() == method.lora_B.keys()
    for key, a in method.lora_A.items():  # PEFT: A ~ kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)); B = 0
        bound = a.shape[1] ** -0.5
        assert 0.95 * bound <= a.abs().max() <= bound and torch.count_nonzero(method.lora_B[key]) == 0, key
