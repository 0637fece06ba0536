"""Generation with every method: the loss is Hugging Face's own causal-LM loss on the target tokens only, decoding
goes through `generate` and equals a greedy loop over the method's forward pass, batched equals alone, deep prompts
reach every beam, and artifacts round-trip and refuse the wrong command."""

import pytest
import torch
from transformers import DynamicCache

from conftest import make_backbone
from suffixtune import Classifier
from suffixtune.decoding import Decoding
from suffixtune.errors import ArtifactError, ConfigError
from suffixtune.generator import IGNORED, Generator
from suffixtune.multitask import MultiTaskClassifier, MultiTaskGenerator
from suffixtune.tasks import TASKS, Task

TASK = Task(name="describe", kind="generation", text_columns=("text",), target_column="target", label_names=None,
            template="Facts: {text}\nText:", prompt_text=" Write it out:", metrics=("bleu", "rouge_l"))
SOURCES = ["the cat sat on the mat", "a", "three small dogs ran far away today"]
TARGETS = ["it sat", "no", "they ran very far indeed"]
METHODS = ["suffix", "prefix", "deep-prefix", "lora", "full"]


def batch(tokenizer, sources=SOURCES, targets=TARGETS):
    """Right-padded sources as the template writes them, and target ids + end of text, padded with -100."""
    encoded = tokenizer([TASK.format({"text": s}) for s in sources], return_tensors="pt", padding=True)
    ids = [tokenizer(" " + t).input_ids + [tokenizer.eos_token_id] for t in targets]
    width = max(map(len, ids))
    return encoded.input_ids, encoded.attention_mask, torch.tensor([t + [IGNORED] * (width - len(t)) for t in ids])


def build(kind, tokenizer_dir, method, **options):
    backbone, tokenizer = make_backbone(kind, tokenizer_dir)
    torch.manual_seed(1)
    config = None
    if method in ("suffix", "prefix", "deep-prefix"):
        from suffixtune.methods import get_method

        config = get_method(method).config_class(prompt_length=3, prompt_init="random" if method != "deep-prefix" else "text")
    generator = Generator.build(backbone, tokenizer, TASK, method, config, max_length=40, max_target_length=16, **options)
    with torch.no_grad():  # trained-looking state: the prompt and LoRA's B away from their starting values
        for parameter in generator.method.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return generator


def reference_loss(generator, input_ids, attention_mask, labels):
    """Hugging Face's causal-LM loss of each row alone, on [source | prompt | target] with every label but the
    target's -100, averaged over all target tokens of the batch."""
    backbone, method = generator.backbone, generator.method
    total, count = 0.0, 0
    for row in range(len(input_ids)):
        source = input_ids[row][attention_mask[row].bool()]
        target = labels[row][labels[row] != IGNORED]
        embeds = backbone.get_input_embeddings()(torch.cat([source, target]))
        kwargs, start = {}, 0
        if method.name in ("suffix", "prefix"):
            prompt = method.prompt_vectors()
            at = len(source) if method.name == "suffix" else 0
            embeds = torch.cat([embeds[:at], prompt, embeds[at:]])
        if method.name == "deep-prefix":
            kv = method.key_values()
            kwargs["past_key_values"] = DynamicCache([(k[None], v[None]) for k, v in kv])
            start = kv.shape[3]
            kwargs["position_ids"] = torch.arange(start, start + len(embeds))[None]
        label_row = torch.cat([torch.full((len(embeds) - len(target),), IGNORED), target])
        loss = backbone(inputs_embeds=embeds[None], labels=label_row[None], **kwargs).loss
        total, count = total + loss * len(target), count + len(target)
    return total / count


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("method", METHODS)
def test_loss_is_the_lm_loss_on_target_tokens_only(tokenizer_dir, kind, method):
    generator = build(kind, tokenizer_dir, method)
    generator.frozen_text = False
    ids, mask, labels = batch(generator.tokenizer)
    torch.testing.assert_close(generator(ids, mask, labels).loss, reference_loss(generator, ids, mask, labels), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["suffix", "deep-prefix", "lora"])
def test_left_padded_sources_and_targets_give_the_same_loss(tokenizer_dir, method):
    # DataCollatorForSeq2Seq pads targets on the tokenizer's side: a left-padded target must still start right
    # after its source (and prompt), and the loss must stay the reference's
    generator = build("llama", tokenizer_dir, method)
    generator.frozen_text = False
    ids, mask, labels = batch(generator.tokenizer)
    generator.tokenizer.padding_side = "left"
    left_ids, left_mask, _ = batch(generator.tokenizer)
    order = torch.argsort((labels != IGNORED).to(torch.int8), dim=1, stable=True)  # the -100s first
    left_labels = labels.gather(1, order)
    assert (left_labels[:, 0] == IGNORED).any() and not torch.equal(left_labels, labels)
    expected = reference_loss(generator, ids, mask, labels)
    torch.testing.assert_close(generator(left_ids, left_mask, left_labels).loss, expected, atol=1e-5, rtol=1e-5)
    # Trainer's num_items_in_batch (targets of all accumulated steps): the sum over this batch's targets divided by it
    written = int((labels != IGNORED).sum())
    summed = generator(ids, mask, labels, num_items_in_batch=3 * written).loss
    torch.testing.assert_close(summed, expected / 3, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_suffix_trains_on_the_frozen_source_as_on_the_full_pass(tokenizer_dir, kind):
    generator = build(kind, tokenizer_dir, "suffix")
    ids, mask, labels = batch(generator.tokenizer)
    assert generator.runs_text_apart_when_training()
    results = []
    for frozen in (True, False):
        generator.frozen_text = frozen
        generator.zero_grad()
        loss = generator(ids, mask, labels).loss
        loss.backward()
        results.append((loss.detach(), generator.method.prompt.grad.clone()))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-5, rtol=1e-5)


def greedy_loop(generator, source, steps):
    """Greedy decoding written out: at each step the method's own forward pass over [source | ... | written so far]."""
    ids = generator.tokenizer([TASK.format({"text": source})], return_tensors="pt")
    written = []
    for _ in range(steps):
        target = torch.tensor([written + [0]])  # the last slot's state predicts the next token
        with torch.no_grad():
            hidden = generator.target_hidden(ids.input_ids, ids.attention_mask, target)
        token = int(generator.head(hidden[:, -1]).argmax())
        written.append(token)
        if token == generator.tokenizer.eos_token_id:
            break
    return generator.tokenizer.decode(written, skip_special_tokens=True).strip()


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("method", METHODS)
def test_greedy_generate_equals_a_greedy_loop_and_batched_equals_alone(tokenizer_dir, kind, method):
    generator = build(kind, tokenizer_dir, method)
    greedy = Decoding(num_beams=1, max_new_tokens=6)
    batched = generator.generate([{"text": s} for s in SOURCES], greedy)
    alone = [generator.generate([{"text": s}], greedy)[0] for s in SOURCES]
    assert batched == alone
    assert batched == [greedy_loop(generator, s, 6) for s in SOURCES]
    assert len(set(batched)) > 1  # the sources matter


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_beam_search_attends_to_the_deep_prefix_in_every_beam(tokenizer_dir, kind):
    # A deep prefix started from the backbone's own keys and values of a text is that text as a prompt before the
    # source: with beams, its cached keys/values must give what prefix prompt tuning gives through inputs_embeds.
    backbone, tokenizer = make_backbone(kind, tokenizer_dir)
    from suffixtune.methods.deep_prefix import DeepPrefixConfig
    from suffixtune.methods.soft_prompt import SoftPromptConfig

    deep = Generator.build(backbone, tokenizer, TASK, "deep-prefix", DeepPrefixConfig(prompt_length=3), 40, 16)
    shallow = Generator.build(backbone, tokenizer, TASK, "prefix", SoftPromptConfig(prompt_length=3), 40, 16)
    beams = Decoding(num_beams=3, max_new_tokens=6)
    rows = [{"text": s} for s in SOURCES]
    written = deep.generate(rows, beams)
    assert written == shallow.generate(rows, beams)
    with torch.no_grad():
        deep.method.prefix.mul_(-1.0)
    assert deep.generate(rows, beams) != written


@pytest.mark.parametrize("method", ["suffix", "deep-prefix", "lora"])
def test_save_then_load_writes_the_same_text(tokenizer_dir, tmp_path, method):
    generator = build("gpt2", tokenizer_dir, method)
    rows = [{"text": s} for s in SOURCES]
    written = generator.generate(rows, Decoding(num_beams=2, max_new_tokens=6))
    generator.save_pretrained(tmp_path)
    backbone, tokenizer = make_backbone("gpt2", tokenizer_dir)
    loaded = Generator.from_pretrained(tmp_path, backbone, tokenizer)
    assert loaded.generate(rows, Decoding(num_beams=2, max_new_tokens=6)) == written


def test_a_saved_e2e_generator_renders_sources_and_reads_references_as_training_did(tokenizer_dir, tmp_path):
    backbone, tokenizer = make_backbone("gpt2", tokenizer_dir)
    Generator.build(backbone, tokenizer, TASKS["e2e"], "lora", max_length=40, max_target_length=16).save_pretrained(tmp_path)
    task = Generator.from_pretrained(tmp_path, *make_backbone("gpt2", tokenizer_dir)).classifier_config.as_task()
    assert (task.name, task.kind, task.text_columns, task.target_column, task.render) == (
        "e2e", "generation", ("mr",), "ref", "e2e")
    assert task.format(task.rendered({"mr": "name[The Eagle], food[French]"})) == "Restaurant: name : The Eagle | food : French\nDescription:"


def test_each_kind_of_artifact_refuses_the_other_command(tokenizer_dir, tmp_path):
    from conftest import toy_task

    build("gpt2", tokenizer_dir, "suffix").save_pretrained(tmp_path / "writer")
    backbone, tokenizer = make_backbone("gpt2", tokenizer_dir)
    Classifier.build(backbone, tokenizer, toy_task(), "suffix").save_pretrained(tmp_path / "classifier")
    backbone, tokenizer = make_backbone("gpt2", tokenizer_dir)
    with pytest.raises(ArtifactError, match=r"writer is a generation artifact .* use `suffixtune generate`"):
        Classifier.from_pretrained(tmp_path / "writer", backbone, tokenizer)
    with pytest.raises(ArtifactError, match=r"classifier is a classification artifact .* use `suffixtune predict`"):
        Generator.from_pretrained(tmp_path / "classifier", backbone, tokenizer)
    with pytest.raises(ArtifactError, match=r"writer is a generation artifact .* use `suffixtune generate`"):
        MultiTaskClassifier.from_pretrained({"w": tmp_path / "writer"}, backbone, tokenizer)
    with pytest.raises(ArtifactError, match=r"classifier is a classification artifact .* use `suffixtune predict`"):
        MultiTaskGenerator.from_pretrained({"c": tmp_path / "classifier"}, backbone, tokenizer)


def test_a_source_longer_than_the_context_gives_way_to_the_prompt_and_the_target(tokenizer_dir):
    backbone, tokenizer = make_backbone("gpt2", tokenizer_dir)
    long = Generator.build(backbone, tokenizer, TASK, "suffix", None, max_length=1000, max_target_length=100)
    # tiny GPT-2 holds 128 positions: 20 prompt vectors (the default) and 100 target tokens leave 8 for the source
    assert long.classifier_config.max_length == 8
    written = long.generate([{"text": "word " * 500}], Decoding(num_beams=2))
    assert isinstance(written[0], str)
    with pytest.raises(ConfigError, match="leaving none for the source; lower --max_target_length or --prompt_length"):
        Generator.build(backbone, tokenizer, TASK, "suffix", None, max_target_length=120)


def test_classification_only_methods_and_heads_are_refused_for_generation(tokenizer_dir):
    backbone, tokenizer = make_backbone("gpt2", tokenizer_dir)
    for method in ("suffix-lora", "head"):
        with pytest.raises(ConfigError, match=f"--method {method} trains for classification only"):
            Generator.build(backbone, tokenizer, TASK, method)
    from conftest import toy_task

    with pytest.raises(ConfigError, match="is a classification task"):
        Generator.build(backbone, tokenizer, toy_task(), "suffix")
    with pytest.raises(ConfigError, match="--num_beams must be at least 1"):
        Decoding(num_beams=0)
    generator = Generator.build(backbone, tokenizer, TASK, "suffix", None, max_length=40, max_target_length=16)
    # 128 positions, 20 prompt vectors and sources of up to 40 tokens leave 68 to write
    with pytest.raises(ConfigError, match="--max_new_tokens 69 could run past the model's 128 positions .* at most 68"):
        generator.generate(["a"], Decoding(max_new_tokens=69))
    backbone.config.final_logit_softcapping = 30.0
    with pytest.raises(ConfigError, match=r"changes its logits after the output layer \(final_logit_softcapping\)"):
        Generator.build(backbone, tokenizer, TASK, "suffix")


@pytest.mark.parametrize("method", ["deep-prefix", "suffix"])
def test_decoding_ignores_the_checkpoints_own_generation_settings(tokenizer_dir, method):
    generator = build("gpt2", tokenizer_dir, method)
    rows = [{"text": s} for s in SOURCES]
    beams = Decoding(num_beams=3, max_new_tokens=6)
    written = generator.generate(rows, beams)
    settings = generator.backbone.generation_config
    settings.repetition_penalty, settings.num_return_sequences, settings.min_new_tokens = 5.0, 2, 6
    settings.cache_implementation = "static"  # as some checkpoints ship it; generate refuses it beside a prefix's cache
    settings.return_dict_in_generate, settings.suppress_tokens = True, generator.tokenizer(" the").input_ids
    assert generator.generate(rows, beams) == written
    assert generator.backbone.generation_config is settings and settings.cache_implementation == "static"
