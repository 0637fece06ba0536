"""Many generation tasks on one backbone: suffix tasks write from one pass over each source, its keys and values
computed once and read by every task's prompt and every beam."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from transformers import DynamicCache, PreTrainedModel

from ..classifier import length_sorted_batches
from ..decoding import Decoding
from ..errors import ConfigError
from ..generator import Generator, generate_with
from ..tasks.data import Row
from ..text_pass import encode_texts, eval_mode, within_attention_window
from .classifier import MultiTaskClassifier


class MultiTaskGenerator(MultiTaskClassifier):
    """Generators for many tasks on one frozen backbone.

    Suffix tasks that read the same source tokens write from a single pass per source: its keys and values are
    computed once, and one `generate` call runs every task's prompt and beams against them. Other methods write
    with their own full pass; those that change the backbone (lora, full, last-blocks) on a copy.
    """

    artifact_class = Generator

    def shared_pass_fits(self, classifiers: Sequence[Generator], new_tokens: int | None = None) -> bool:
        """Whether rows of a shared call (source, padding, the longest prompt, then `new_tokens` written, by default
        the longest trained target) stay inside the backbone's attention windows, which count slots."""
        new_tokens = new_tokens or max(g.classifier_config.max_target_length for g in classifiers)
        longest = max(g.classifier_config.max_length for g in classifiers) + max(g.method.added_positions for g in classifiers)
        return within_attention_window(self.backbone, longest + new_tokens)

    def classify(self, rows, tasks=None, batch_size: int = 64):
        raise ConfigError("generation artifacts write text: use generate() (`suffixtune generate`), not classify()")

    def generate(
        self, rows: Sequence[Row], tasks: Sequence[str] | None = None, decoding: Decoding | None = None, batch_size: int = 16
    ) -> list[dict[str, str]]:
        """Per source, per task: the text written after it. `batch_size` counts sources per `generate` call."""
        names = self.check_tasks(tasks)
        decoding = decoding or Decoding()
        new_tokens = {name: self.classifiers[name].new_tokens(decoding) for name in names}
        results: list[dict[str, str]] = [{} for _ in rows]
        device = self.backbone.get_input_embeddings().weight.device
        with contextlib.ExitStack() as stack:
            for name in names:
                stack.enter_context(eval_mode(self.classifiers[name]))
            for group in self.encode(rows, names):
                calls = self.plan_calls(group.tasks, new_tokens)
                for chunk, batch in length_sorted_batches(self.tokenizer, group.input_ids, batch_size, device):
                    for call in calls:
                        generators = [self.classifiers[name] for name in call]
                        if len(call) == 1:
                            written = [generators[0].generate_ids(batch["input_ids"], batch["attention_mask"], decoding)]
                        else:
                            written = shared_source_generate(self.backbone, generators, batch["input_ids"], batch["attention_mask"], decoding)
                        for name, ids in zip(call, written, strict=True):
                            for i, text in zip(chunk, self.tokenizer.batch_decode(ids, skip_special_tokens=True), strict=True):
                                results[i][name] = text.strip()
        return [{name: result[name] for name in names} for result in results]

    def plan_calls(self, tasks: Sequence[str], new_tokens: dict[str, int]) -> list[list[str]]:
        """Tasks that write in one `generate` call: suffix tasks with the same length limit whose shared rows fit
        the attention windows (`shared_pass_fits`); every other task alone."""
        by_limit: dict[int, list[str]] = {}
        calls = []
        for name in tasks:
            if self.tasks[name].shared_cache:
                by_limit.setdefault(new_tokens[name], []).append(name)
            else:
                calls.append([name])
        for limit, names in by_limit.items():
            fits = self.shared_pass_fits([self.classifiers[name] for name in names], limit)
            calls.extend([names] if len(names) > 1 and fits else [[name] for name in names])
        return calls


@torch.no_grad()
def shared_source_generate(
    backbone: PreTrainedModel, generators: Sequence[Generator], input_ids: torch.Tensor, attention_mask: torch.Tensor,
    decoding: Decoding,
) -> list[torch.Tensor]:
    """[B, new] token ids per suffix generator, from one pass over the sources and one `generate` call.

    Row (k, b) of the call is task k's prompt after source b: the source's cached keys and values (right-padded,
    the pads masked), then the prompt, left-padded to the longest prompt. Positions follow the mask, so each row
    sees exactly what `Generator.generate_ids` gives it alone.
    """
    state = encode_texts(backbone, input_ids, attention_mask)
    prompts = [g.method.suffix_embeddings() for g in generators]
    if any(p is None for p in prompts):
        raise ConfigError("every task of a shared source pass needs a suffix prompt")
    tasks, sources, cached = len(prompts), len(state.lengths), state.mask.shape[1]
    width, embed = max(len(p) for p in prompts), backbone.get_input_embeddings().weight
    after = embed.new_zeros(tasks, sources, width, embed.shape[1])
    after_mask = state.mask.new_zeros(tasks, sources, width)
    for k, prompt in enumerate(prompts):
        after[k, :, width - len(prompt):] = prompt.to(embed.dtype)
        after_mask[k, :, width - len(prompt):] = True
    embeds = torch.cat([after.new_zeros(tasks * sources, cached, embed.shape[1]), after.flatten(0, 1)], 1)  # generate skips the cached
    mask = torch.cat([state.mask.repeat(tasks, 1), after_mask.flatten(0, 1)], 1).long()
    cache = DynamicCache([
        (k.repeat(tasks, 1, 1, 1).repeat_interleave(decoding.num_beams, 0), v.repeat(tasks, 1, 1, 1).repeat_interleave(decoding.num_beams, 0))
        for k, v in zip(state.keys, state.values, strict=True)
    ])
    settings = generators[0].generation_config(decoding)
    written = generate_with(backbone, embeds, mask, settings, cache)
    return list(written.split(sources))
