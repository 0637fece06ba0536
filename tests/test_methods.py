"""Every method on tiny GPT-2 and Llama: it learns, trains exactly its parameters, and saves only those."""

import pytest
import torch
from peft import PrefixTuningConfig, get_peft_model
from safetensors import safe_open

from conftest import make_backbone, toy_task
from suffixtune import Classifier
from suffixtune.artifacts import WEIGHTS_NAME
from suffixtune.errors import ConfigError
from suffixtune.methods import METHODS, get_method
from suffixtune.methods.deep_prefix import DeepPrefixConfig
from suffixtune.methods.finetune import LastBlocksConfig
from suffixtune.methods.soft_prompt import SoftPromptConfig

TEXTS = [
    "A gripping, beautifully shot film.",
    "Dull.",
    "The plot wanders, the acting is wooden, and the ending never arrives at all.",
    "Not bad",
    "great fun",
    "terrible",
]
HEAD = {"head.linear.weight", "head.linear.bias"}
CONFIGS = {
    "suffix": SoftPromptConfig(prompt_length=4),
    "prefix": SoftPromptConfig(prompt_length=4),
    "deep-prefix": DeepPrefixConfig(prompt_length=4),
    "deep-prefix-reparam": DeepPrefixConfig(prompt_length=4, reparam=True, reparam_hidden_size=16),
    "lora": None,
    "full": None,
    "last-blocks": LastBlocksConfig(blocks=1),
    "head": None,
}


def build(kind, tokenizer_dir, variant, num_labels=2, padding_side="right", pooling="last", head="linear"):
    model, tokenizer = make_backbone(kind, tokenizer_dir, padding_side)
    method = variant.removesuffix("-reparam")
    classifier = Classifier.build(model, tokenizer, toy_task(num_labels), method, CONFIGS[variant], head, pooling=pooling)
    return classifier, tokenizer


def intended(classifier, variant) -> set[str]:
    """The parameters each method is meant to train, written out independently of the method code."""
    names = {name for name, _ in classifier.named_parameters()}
    last_block = {"gpt2": "backbone.transformer.h.1.", "llama": "backbone.model.layers.1."}
    final_norm = {"backbone.transformer.ln_f.weight", "backbone.transformer.ln_f.bias", "backbone.model.norm.weight"}
    rules = {
        "suffix": lambda n: n == "method.prompt",
        "prefix": lambda n: n == "method.prompt",
        "deep-prefix": lambda n: n == "method.prefix",
        "deep-prefix-reparam": lambda n: n.startswith("method.embedding") or n.startswith("method.mlp."),
        "lora": lambda n: ".lora_A." in n or ".lora_B." in n,
        "full": lambda n: n.startswith(("backbone.transformer.", "backbone.model.")) and ".lora_" not in n,
        "last-blocks": lambda n: n.startswith(tuple(last_block.values())) or n in final_norm,
        "head": lambda n: False,
    }
    return {n for n in names if rules[variant](n)} | HEAD


def train_steps(classifier, tokenizer, labels, steps=30, lr=1e-2):
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    trainable = [p for p in classifier.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=lr)

    def loss():
        return classifier(batch.input_ids, batch.attention_mask, labels).loss

    classifier.eval()  # no dropout: the before/after comparison is exact
    with torch.no_grad():
        before = loss().item()
    for _ in range(steps):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    with torch.no_grad():
        return before, loss().item()


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("variant", list(CONFIGS))
def test_trains_only_its_parameters(tokenizer_dir, kind, variant):
    classifier, tokenizer = build(kind, tokenizer_dir, variant)
    expected = intended(classifier, variant)
    assert {n for n, p in classifier.named_parameters() if p.requires_grad} == expected
    snapshot = {n: p.detach().clone() for n, p in classifier.named_parameters()}
    buffers = {n: b.clone() for n, b in classifier.named_buffers()}

    before, after = train_steps(classifier, tokenizer, torch.tensor([1, 0, 0, 1, 1, 0]))

    assert after < 0.7 * before, f"{variant} on {kind}: loss {before:.4f} -> {after:.4f}"
    changed = {n for n, p in classifier.named_parameters() if not torch.equal(p, snapshot[n])}
    assert changed == expected
    assert all(torch.equal(b, buffers[n]) for n, b in classifier.named_buffers())


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("variant", list(CONFIGS))
def test_regression(tokenizer_dir, kind, variant):
    """STS-B-like: one real-valued output scored against similarity labels in [0, 5] by MSE."""
    classifier, tokenizer = build(kind, tokenizer_dir, variant, num_labels=1)
    targets = torch.tensor([4.5, 0.5, 1.0, 3.0, 4.0, 0.0])
    before, after = train_steps(classifier, tokenizer, targets, steps=60)
    predicting_the_mean = targets.var(unbiased=False).item()
    assert after < 0.25 * predicting_the_mean < before, f"{variant}: MSE {before:.4f} -> {after:.4f}"
    predictions = torch.tensor([row["value"] for row in classifier.predict(TEXTS)])
    torch.testing.assert_close(((predictions - targets) ** 2).mean().item(), after, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("variant", list(CONFIGS))
def test_save_load_identical_and_only_what_trained(tokenizer_dir, tmp_path, kind, variant):
    classifier, tokenizer = build(kind, tokenizer_dir, variant, num_labels=3)
    with torch.no_grad():
        for p in classifier.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)  # trained values, not the init, must be what loads
    classifier.save_pretrained(tmp_path)
    with safe_open(tmp_path / WEIGHTS_NAME, "pt") as saved:
        assert set(saved.keys()) == intended(classifier, variant)

    fresh, fresh_tokenizer = make_backbone(kind, tokenizer_dir)
    reloaded = Classifier.from_pretrained(tmp_path, backbone=fresh, tokenizer=fresh_tokenizer)
    torch.testing.assert_close(reloaded.predict_logits(TEXTS), classifier.predict_logits(TEXTS), atol=0, rtol=0)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("pooling", ["last", "mean"])
@pytest.mark.parametrize("variant", ["deep-prefix", "lora", "last-blocks", "head", "suffix"])
def test_batched_matches_each_text_alone(tokenizer_dir, kind, padding_side, pooling, variant):
    classifier, tokenizer = build(kind, tokenizer_dir, variant, 3, padding_side, pooling)
    classifier.eval()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert (batch.attention_mask == 0).any()
    batched = classifier(batch.input_ids, batch.attention_mask).logits
    for text, row in zip(TEXTS, batched, strict=True):
        ids = torch.tensor([tokenizer(text).input_ids])
        torch.testing.assert_close(row, classifier(ids, torch.ones_like(ids)).logits[0], atol=1e-5, rtol=0)


def test_mean_pooling_averages_every_real_position(tokenizer_dir):
    classifier, tokenizer = build("gpt2", tokenizer_dir, "suffix", pooling="mean")
    ids = torch.tensor([tokenizer("a fine film").input_ids])
    inputs = classifier.method(classifier.backbone.get_input_embeddings()(ids), torch.ones_like(ids))
    hidden = classifier.backbone.base_model(inputs_embeds=inputs.inputs_embeds).last_hidden_state[0]
    assert hidden.shape[0] == ids.shape[1] + 4  # text and prompt
    expected = classifier.head(hidden.mean(0))
    torch.testing.assert_close(classifier(ids, torch.ones_like(ids)).logits[0], expected)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("head", ["verbalizer", "linear"])
def test_deep_prefix_matches_peft_prefix_tuning(tokenizer_dir, kind, padding_side, head):
    config = DeepPrefixConfig(prompt_length=5, prompt_init="random")
    model, tokenizer = make_backbone(kind, tokenizer_dir, padding_side)
    classifier = Classifier.build(model, tokenizer, toy_task(2), "deep-prefix", config, head)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert (batch.attention_mask == 0).any()
    ours = classifier(batch.input_ids, batch.attention_mask).logits

    peft_model = get_peft_model(model, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5))
    prefix = classifier.method.prefix  # [layers, 2, kv_heads, P, head_dim]
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.copy_(prefix.permute(3, 0, 1, 2, 4).reshape(5, -1))
    positions = (batch.attention_mask.cumsum(1) - 1).clamp(min=0)  # text from position 0, as PEFT runs a right-padded row
    output = peft_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=positions, output_hidden_states=True)
    last = batch.attention_mask.shape[1] - 1 if padding_side == "left" else batch.attention_mask.sum(1) - 1
    rows = torch.arange(len(TEXTS))
    if head == "verbalizer":
        theirs = output.logits[rows, last][:, classifier.head.token_ids]
    else:
        theirs = classifier.head(output.hidden_states[-1][rows, last])
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_reparameterised_deep_prefix_matches_peft_prefix_projection(tokenizer_dir):
    """GPT-2 only: with grouped-query attention PEFT's embedding is as wide as the keys, ours as the hidden state."""
    config = DeepPrefixConfig(prompt_length=5, reparam=True, reparam_hidden_size=16)
    model, tokenizer = make_backbone("gpt2", tokenizer_dir)
    classifier = Classifier.build(model, tokenizer, toy_task(2), "deep-prefix", config, "verbalizer")
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    ours = classifier(batch.input_ids, batch.attention_mask).logits

    peft_config = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5, prefix_projection=True, encoder_hidden_size=16)
    peft_model = get_peft_model(model, peft_config)
    encoder, mlp = peft_model.prompt_encoder["default"], classifier.method.mlp  # both: embedding -> Linear, Tanh, Linear
    with torch.no_grad():
        encoder.embedding.weight.copy_(classifier.method.embedding)
        for theirs, mine in ((encoder.transform[0], mlp[0]), (encoder.transform[2], mlp[2])):
            theirs.weight.copy_(mine.weight)
            theirs.bias.copy_(mine.bias)
    output = peft_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    last = batch.attention_mask.sum(1) - 1
    theirs = output.logits[torch.arange(len(TEXTS)), last][:, classifier.head.token_ids]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_deep_prefix_text_init_equals_the_text_as_a_prefix(tokenizer_dir, kind):
    """Initialised from a text's own keys and values, a deep prefix is exactly that text placed before the input."""
    model, tokenizer = make_backbone(kind, tokenizer_dir)
    task = toy_task(2)
    deep = Classifier.build(model, tokenizer, task, "deep-prefix", DeepPrefixConfig(prompt_length=6), "verbalizer")
    shallow = Classifier.build(model, tokenizer, task, "prefix", SoftPromptConfig(prompt_length=6), "verbalizer")
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    torch.testing.assert_close(
        deep(batch.input_ids, batch.attention_mask).logits, shallow(batch.input_ids, batch.attention_mask).logits,
        atol=1e-5, rtol=1e-5,
    )


@pytest.mark.parametrize("variant", ["suffix", "lora", "last-blocks"])
def test_activation_checkpointing_gives_the_same_gradients(tokenizer_dir, variant):
    def gradients(checkpointing):
        classifier, tokenizer = build("llama", tokenizer_dir, variant)
        classifier.train()
        if checkpointing:
            classifier.activation_checkpointing_enable()
            assert classifier.backbone.is_activation_checkpointing
        batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
        classifier(batch.input_ids, batch.attention_mask, torch.tensor([1, 0, 0, 1, 1, 0])).loss.backward()
        return {n: p.grad for n, p in classifier.named_parameters() if p.grad is not None}

    plain, checkpointed = gradients(False), gradients(True)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5)


def test_lora_targets_per_architecture(tokenizer_dir):
    gpt2, _ = build("gpt2", tokenizer_dir, "lora")
    llama, _ = build("llama", tokenizer_dir, "lora")
    assert gpt2.backbone.transformer.h[0].attn.c_attn.fan_in_fan_out
    assert gpt2.classifier_config.method_config["lora_target_modules"] == ["c_attn"]  # stored resolved in the artifact
    assert {n.split(".")[-4] for n, p in llama.named_parameters() if "lora_A" in n} == {"q_proj", "k_proj", "v_proj", "o_proj"}


def test_lora_options_are_checked(tokenizer_dir):
    model, tokenizer = make_backbone("gpt2", tokenizer_dir)
    lora = get_method("lora").config_class
    with pytest.raises(ConfigError, match=r"match no module .* named \[.*'c_attn'"):
        Classifier.build(model, tokenizer, toy_task(2), "lora", lora(lora_target_modules=["q_proj"]))
    Classifier.build(model, tokenizer, toy_task(2), "lora")
    with pytest.raises(ConfigError, match="already carries PEFT adapters"):
        Classifier.build(model, tokenizer, toy_task(2), "lora")


def test_last_blocks_refuses_more_blocks_than_the_model_has(tokenizer_dir):
    model, tokenizer = make_backbone("gpt2", tokenizer_dir)
    with pytest.raises(ConfigError, match="--blocks 3 is more than the 2 blocks"):
        Classifier.build(model, tokenizer, toy_task(2), "last-blocks", LastBlocksConfig(blocks=3))


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_last_blocks_can_train_every_block(tokenizer_dir, kind):
    model, tokenizer = make_backbone(kind, tokenizer_dir)
    classifier = Classifier.build(model, tokenizer, toy_task(2), "last-blocks", LastBlocksConfig(blocks=2))  # both of 2
    blocks = {"gpt2": "backbone.transformer.h.", "llama": "backbone.model.layers."}[kind]
    block_params = [p for name, p in classifier.named_parameters() if name.startswith(blocks)]
    assert block_params and all(p.requires_grad for p in block_params)


def test_method_settings_are_checked_at_their_limits():
    for accepted in (DeepPrefixConfig(prompt_length=1), SoftPromptConfig(prompt_length=1)):
        assert accepted.prompt_length == 1
    lora = get_method("lora").config_class
    assert lora(lora_r=1, lora_dropout=0.0).lora_r == 1
    with pytest.raises(ConfigError, match=r"--lora_dropout must be in \[0, 1\), got 1.0"):
        lora(lora_dropout=1.0)
    with pytest.raises(ConfigError, match="--lora_r must be at least 1, got 0"):
        lora(lora_r=0)
    with pytest.raises(ConfigError, match="--prompt_length must be at least 1"):
        DeepPrefixConfig(prompt_length=0)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_lora_settings_reach_peft(tokenizer_dir, kind):
    from peft.tuners.lora import LoraLayer

    model, tokenizer = make_backbone(kind, tokenizer_dir)
    config = get_method("lora").config_class(lora_r=4, lora_alpha=12, lora_dropout=0.25)
    classifier = Classifier.build(model, tokenizer, toy_task(2), "lora", config)
    layers = [m for m in classifier.backbone.modules() if isinstance(m, LoraLayer)]
    assert layers
    for layer in layers:  # PEFT scales the update by alpha / r
        assert layer.r["default"] == 4 and layer.scaling["default"] == 3.0 and layer.lora_dropout["default"].p == 0.25
        assert layer.lora_A["default"].weight.shape[0] == 4 and bool(layer.fan_in_fan_out) == (kind == "gpt2")


@pytest.mark.parametrize("missing", ["h", "ln_f"])
def test_last_blocks_names_an_architecture_it_cannot_read(tokenizer_dir, missing):
    from suffixtune.methods.finetune import find_blocks

    model, _ = make_backbone("gpt2", tokenizer_dir)
    delattr(model.transformer, missing)  # as if the blocks or the final norm had a name last-blocks does not know
    with pytest.raises(ConfigError, match="cannot find the transformer blocks and final norm of GPT2Model; --method last-blocks knows"):
        find_blocks(model)


def test_every_method_is_registered_with_a_config_learning_rate_and_report_order():
    assert set(METHODS) == {"suffix", "suffix-lora", "prefix", "deep-prefix", "lora", "full", "last-blocks", "head"}
    readme_rates = {  # README, "Defaults": soft prompts 3e-3; deep-prefix and head 3e-3, lora 5e-4, ...
        "suffix": 3e-3, "suffix-lora": 3e-3, "prefix": 3e-3, "deep-prefix": 3e-3, "head": 3e-3,
        "lora": 5e-4, "last-blocks": 5e-5, "full": 2e-5,
    }
    for name, method in METHODS.items():
        assert method.learning_rate_for(method.config_class()) == readme_rates[name], name  # defaults are valid
    assert METHODS["deep-prefix"].learning_rate_for(METHODS["deep-prefix"].config_class(reparam=True)) == 3e-4
    by_order = sorted(METHODS, key=lambda name: METHODS[name].report_order)
    assert by_order == ["suffix", "suffix-lora", "prefix", "deep-prefix", "lora", "last-blocks", "full", "head"]
    assert len({method.report_order for method in METHODS.values()}) == len(METHODS)


@pytest.mark.parametrize("variant", list(CONFIGS))
def test_declared_facts_are_what_the_method_does(tokenizer_dir, variant):
    classifier, _ = build("gpt2", tokenizer_dir, variant)
    method, hidden = classifier.method, classifier.backbone.get_input_embeddings().embedding_dim
    assert (method.added_positions > 0) == method.adds_prompt_positions
    prompt = method.prompt_vectors()
    assert (prompt is not None) == method.has_prompt_vectors
    assert prompt is None or (prompt.shape == (method.added_positions, hidden) and prompt.requires_grad)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_settings_a_method_cannot_train_with_are_refused_before_loading(name):
    method = METHODS[name]
    config = method.config_class()
    method.check(config, "linear", "float32", False, True)
    method.check(config, "linear", "bfloat16", False, False)  # evaluating a bfloat16 backbone is fine for every method
    if name in ("full", "last-blocks"):  # Adam on bfloat16 weights: updates below their precision vanish
        with pytest.raises(ConfigError, match=f"--method {name} updates backbone weights, which must be float32"):
            method.check(config, "linear", "bfloat16", False, True)
    else:
        method.check(config, "linear", "bfloat16", False, True)
    if name == "deep-prefix":  # checkpointed blocks recompute without the per-layer prompt
        with pytest.raises(ConfigError, match="--method deep-prefix cannot train with activation"):
            method.check(config, "linear", "float32", True, True)
    else:
        method.check(config, "linear", "float32", True, True)
