"""Models whose layers attend within a window (GPT-Neo's local layers, Mistral's sliding window): the shared and
frozen-text passes, which pad between text and prompt or keep a text's cache apart, are used only where every row
stays inside the window; beyond it each task runs the ordinary full pass, and answers what it answers alone."""

import pytest
import torch
from test_generator import TASK
from transformers import (
    Gemma3Config,
    GPT2Config,
    GPT2TokenizerFast,
    GPTNeoConfig,
    GPTNeoForCausalLM,
    Llama4TextConfig,
    LlamaConfig,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
)

from conftest import toy_task
from suffixtune import Classifier
from suffixtune.decoding import Decoding
from suffixtune.generator import Generator
from suffixtune.methods.soft_prompt import SoftPromptConfig
from suffixtune.multitask import MultiTaskClassifier, MultiTaskGenerator
from suffixtune.text_pass import attention_window

ROWS = [{"text": "a"}, {"text": "the cat sat on the mat and then it went to sleep for a long while"}, {"text": "three dogs"}]


def test_the_window_is_read_from_each_kind_of_config():
    assert attention_window(MistralConfig()) == 4096
    assert attention_window(MistralConfig(sliding_window=None)) is None
    assert attention_window(Qwen2Config()) is None  # use_sliding_window is off by default
    assert attention_window(Qwen2Config(use_sliding_window=True, sliding_window=1024, max_window_layers=0)) == 1024
    assert attention_window(GPTNeoConfig(window_size=64)) == 64  # alternating global and local layers
    assert attention_window(GPTNeoConfig(attention_types=[[["global"], 24]], num_layers=24)) is None
    assert attention_window(LlamaConfig()) is None and attention_window(GPT2Config()) is None
    assert attention_window(Llama4TextConfig(attention_chunk_size=1024)) == 1024  # chunks count slots too
    assert attention_window(Gemma3Config(text_config={"sliding_window": 512})) == 512  # through the text model's config


def windowed(kind, tokenizer_dir, window):
    torch.manual_seed(0)
    tokenizer = GPT2TokenizerFast.from_pretrained(tokenizer_dir)
    tokenizer.pad_token = tokenizer.eos_token
    if kind == "gpt-neo":
        model = GPTNeoForCausalLM(GPTNeoConfig(
            vocab_size=len(tokenizer), hidden_size=32, num_layers=2, num_heads=2, attention_types=[[["global", "local"], 1]],
            window_size=window, max_position_embeddings=128, embed_dropout=0, attention_dropout=0, resid_dropout=0, initializer_range=0.2,
        ))
    else:
        model = MistralForCausalLM(MistralConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128, sliding_window=window, initializer_range=0.2,
        ))
    model.config.pad_token_id = tokenizer.pad_token_id
    model.requires_grad_(False).eval()
    model.name_or_path = f"tiny-{kind}"
    return model, tokenizer


def suffix_generators(backbone, tokenizer):
    built = {}
    for k, length in enumerate([1, 5]):
        torch.manual_seed(10 + k)
        config = SoftPromptConfig(prompt_length=length, prompt_init="random")
        generator = Generator.build(backbone, tokenizer, TASK, "suffix", config, max_length=40, max_target_length=12)
        with torch.no_grad():
            generator.method.prompt.add_(0.3 * torch.randn_like(generator.method.prompt))
        built[f"p{length}"] = generator.eval()
    return built


@pytest.mark.parametrize("kind", ["gpt-neo", "mistral"])
def test_tasks_write_what_they_write_alone_past_the_window_and_share_within_it(tokenizer_dir, kind):
    backbone, tokenizer = windowed(kind, tokenizer_dir, window=24)  # the long source, a prompt and 12 tokens run past it
    built = suffix_generators(backbone, tokenizer)
    together = MultiTaskGenerator(backbone, tokenizer, built)
    for beams in (1, 3):
        written = together.generate(ROWS, decoding=Decoding(num_beams=beams))
        for name, generator in built.items():
            assert [row[name] for row in written] == generator.generate(ROWS, Decoding(num_beams=beams)), (name, beams)
    assert together.plan_calls(list(built), {"p1": 12, "p5": 12}) == [["p1"], ["p5"]]
    roomy, tokenizer = windowed(kind, tokenizer_dir, window=100)  # 40 + 5 + 12 slots fit: one shared call
    assert MultiTaskGenerator(roomy, tokenizer, suffix_generators(roomy, tokenizer)).plan_calls(["p1", "p5"], {"p1": 12, "p5": 12}) == [["p1", "p5"]]


def test_classifiers_keep_the_full_pass_when_a_row_could_leave_the_window(tokenizer_dir):
    backbone, tokenizer = windowed("mistral", tokenizer_dir, window=24)

    def suffix_classifier(seed, max_length):
        torch.manual_seed(seed)
        config = SoftPromptConfig(prompt_length=3, prompt_init="random")
        return Classifier.build(backbone, tokenizer, toy_task(), "suffix", config, max_length=max_length)

    texts = [row["text"] for row in ROWS] + [" ".join(["word"] * 30)]  # 30 tokens: past the window
    long = {"long-a": suffix_classifier(1, 40), "long-b": suffix_classifier(2, 40)}
    together = MultiTaskClassifier(backbone, tokenizer, long)
    for name, classifier in long.items():
        got, expected = [row[name] for row in together.classify(texts)], classifier.predict(texts)
        for g, e in zip(got, expected, strict=True):
            assert g["probabilities"] == pytest.approx(e["probabilities"], abs=1e-6)
    assert not together.tasks["long-a"].shared_cache and not long["long-a"].runs_text_apart_when_training()
    short = {"short-a": suffix_classifier(1, 16), "short-b": suffix_classifier(2, 16)}
    assert MultiTaskClassifier(backbone, tokenizer, short).tasks["short-a"].shared_cache  # 16 + 3 + 3 packed slots fit in 24
    assert short["short-a"].runs_text_apart_when_training()
    assert suffix_classifier(1, 20).runs_text_apart_when_training()  # 20 text + 3 prompt slots fit a window of 24
    assert not suffix_classifier(1, 21).runs_text_apart_when_training()  # 21 + 3 do not

    # Texts of 20 fit the window alone, but 20 + 3 + 3 packed slots do not. Shared past it, GPT-Neo's local layers
    # would move "mid-b" by ~0.005 (tiny Mistral's happen to give the same answers: its window comes as a mask).
    backbone, tokenizer = windowed("gpt-neo", tokenizer_dir, window=24)
    mid = {"mid-a": suffix_classifier(1, 20), "mid-b": suffix_classifier(2, 20)}
    together = MultiTaskClassifier(backbone, tokenizer, mid)
    assert not together.tasks["mid-a"].shared_cache
    got, expected = [row["mid-b"] for row in together.classify(texts)], mid["mid-b"].predict(texts)
    for g, e in zip(got, expected, strict=True):
        assert g["probabilities"] == pytest.approx(e["probabilities"], abs=1e-6)


def test_several_label_columns_refuse_a_shared_pass_past_the_window(tokenizer_dir):
    from suffixtune.errors import ConfigError
    from suffixtune.multitask.training import MultiTaskTrainingModel

    backbone, tokenizer = windowed("mistral", tokenizer_dir, window=24)
    columns = {name: Classifier.build(backbone, tokenizer, toy_task(), "suffix", SoftPromptConfig(prompt_length=3), max_length=20)
               for name in ("a", "b")}
    with pytest.raises(ConfigError, match="26 positions, which tiny-mistral's attention window of 24 cannot hold; lower --max_length"):
        MultiTaskTrainingModel(columns)
    assert MultiTaskTrainingModel({"a": columns["a"]}).tasks["a"] is columns["a"]  # 23 positions fit
