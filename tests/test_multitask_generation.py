"""Several generation tasks on one backbone: suffix tasks write from one pass over each source, and every task
writes what it writes alone (and what a greedy loop over its own forward pass writes), on tiny GPT-2 and Llama."""

import copy

import pytest
import torch
from test_generator import SOURCES, TASK, greedy_loop

from conftest import make_backbone
from suffixtune.decoding import Decoding
from suffixtune.errors import ConfigError
from suffixtune.generator import Generator
from suffixtune.methods.soft_prompt import SoftPromptConfig
from suffixtune.multitask import MultiTaskGenerator

LONG_SOURCES = [*SOURCES, "one more source that runs a good deal longer than any prompt here does"]
ROWS = [{"text": s} for s in LONG_SOURCES]

# name: (method, prompt length, max target length)
SPECS = {
    "short": ("suffix", 1, 16),
    "mid": ("suffix", 3, 16),
    "long": ("suffix", 5, 16),
    "own-limit": ("suffix", 2, 5),  # writes fewer tokens by default: a generate call of its own
    "prefix": ("prefix", 3, 16),
    "lora": ("lora", None, 16),
}


def generators(kind, tokenizer_dir, specs=SPECS):
    """Trained-looking generators (their state moved from where it starts) on one backbone, lora on a copy."""
    backbone, tokenizer = make_backbone(kind, tokenizer_dir)
    built = {}
    for number, (name, (method, prompt_length, target_length)) in enumerate(specs.items()):
        config = None if prompt_length is None else SoftPromptConfig(prompt_length=prompt_length, prompt_init="random")
        own = copy.deepcopy(backbone) if method == "lora" else backbone
        torch.manual_seed(10 + number)
        generator = Generator.build(own, tokenizer, TASK, method, config, max_length=40, max_target_length=target_length)
        with torch.no_grad():
            for parameter in generator.method.parameters():
                parameter.add_(0.3 * torch.randn_like(parameter))
        built[name] = generator.eval()
    return backbone, tokenizer, built


def source_passes(backbone, width):
    """Calls of the backbone that run `width` or more positions at once: passes over whole sources."""
    calls = []
    backbone.base_model.register_forward_hook(
        lambda module, args, kwargs, output: calls.append(1) if output.last_hidden_state.shape[1] >= width else None,
        with_kwargs=True,
    )
    return calls


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("num_beams", [1, 3])
def test_every_task_writes_what_it_writes_alone(tokenizer_dir, kind, num_beams):
    backbone, tokenizer, built = generators(kind, tokenizer_dir)
    together = MultiTaskGenerator(backbone, tokenizer, built)
    decoding = Decoding(num_beams=num_beams)  # each task's own default length: "own-limit" writes at most 5 tokens
    written = together.generate(ROWS, decoding=decoding, batch_size=3)
    for name, generator in built.items():
        assert [row[name] for row in written] == generator.generate(ROWS, decoding), name
    longer = built["own-limit"].generate(ROWS, Decoding(num_beams=num_beams, max_new_tokens=16))
    assert [row["own-limit"] for row in written] != longer  # its own limit held in the shared call
    assert len({row["short"] for row in written}) > 1 and len({row["mid"] for row in written}) > 1  # sources matter
    if num_beams == 1:  # and the outside reference: a greedy loop over each suffix task's own forward pass
        written = together.generate(ROWS, ["short", "mid", "long"], Decoding(num_beams=1, max_new_tokens=5), batch_size=3)
        for name in ["short", "mid", "long"]:
            assert [row[name] for row in written] == [greedy_loop(built[name], s, 5) for s in LONG_SOURCES], name


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_suffix_tasks_read_each_source_once(tokenizer_dir, kind):
    suffixes = {name: spec for name, spec in SPECS.items() if name in ("short", "mid", "long")}
    backbone, tokenizer, built = generators(kind, tokenizer_dir, suffixes)
    width = min(len(tokenizer(TASK.format(row)).input_ids) for row in ROWS)
    calls = source_passes(backbone, width)
    shared = MultiTaskGenerator(backbone, tokenizer, built).generate(ROWS, decoding=Decoding(num_beams=2, max_new_tokens=4))
    assert len(calls) == 1  # one batch: one pass over its sources, for three tasks and their beams
    alone = [generator.generate(ROWS, Decoding(num_beams=2, max_new_tokens=4)) for generator in built.values()]
    assert len(calls) == 1 + len(built)
    assert [[row[name] for row in shared] for name in built] == alone


def test_a_checkpoint_that_asks_for_a_static_cache_still_shares_the_source_pass(tokenizer_dir):
    backbone, tokenizer, built = generators("llama", tokenizer_dir, {n: SPECS[n] for n in ("short", "long")})
    decoding = Decoding(num_beams=2, max_new_tokens=4)
    alone = {name: generator.generate(ROWS, decoding) for name, generator in built.items()}
    backbone.generation_config.cache_implementation = "static"
    shared = MultiTaskGenerator(backbone, tokenizer, built).generate(ROWS, decoding=decoding)
    assert {name: [row[name] for row in shared] for name in built} == alone


def test_saved_artifacts_load_together_and_refuse_what_is_not_theirs(tokenizer_dir, tmp_path):
    backbone, tokenizer, built = generators("gpt2", tokenizer_dir, {n: SPECS[n] for n in ("short", "long")})
    for name, generator in built.items():
        generator.save_pretrained(tmp_path / name)
    fresh, fresh_tokenizer = make_backbone("gpt2", tokenizer_dir)
    loaded = MultiTaskGenerator.from_pretrained({n: tmp_path / n for n in built}, backbone=fresh, tokenizer=fresh_tokenizer)
    decoding = Decoding(num_beams=2, max_new_tokens=6)
    written = loaded.generate(ROWS[:2], decoding=decoding)
    assert [row["long"] for row in written] == built["long"].generate(ROWS[:2], decoding)
    assert loaded.tasks["short"].shared_cache and loaded.tasks["long"].shared_cache
    with pytest.raises(ConfigError, match="use generate"):
        loaded.classify(["a text"])
    with pytest.raises(ConfigError, match=r"unknown task\(s\) \['nope'\]"):
        loaded.generate(ROWS, tasks=["nope"])
    with pytest.raises(ConfigError, match="--max_new_tokens 500 could run past"):
        loaded.generate(ROWS, decoding=Decoding(max_new_tokens=500))


def test_one_artifact_that_changes_the_backbone_loads_without_a_copy(tiny_model_dir, tmp_path):
    from suffixtune import load_backbone

    backbone, tokenizer = load_backbone(str(tiny_model_dir))
    torch.manual_seed(0)
    generator = Generator.build(backbone, tokenizer, TASK, "lora", max_length=40, max_target_length=8)
    with torch.no_grad():
        for parameter in generator.method.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    generator.save_pretrained(tmp_path / "lora")
    loaded = MultiTaskGenerator.from_pretrained([tmp_path / "lora"])
    assert loaded.classifiers["describe"].backbone is loaded.backbone  # nothing else reads it: no second copy in memory
    decoding = Decoding(num_beams=2, max_new_tokens=5)
    assert [row["describe"] for row in loaded.generate(ROWS, decoding=decoding)] == generator.generate(ROWS, decoding)
