"""A frozen causal LM + a training method, writing text with the LM's own head: the loss covers the target only,
and decoding goes through Hugging Face `generate` (beams, padding) with prompts as `inputs_embeds`, deep prompts as
the cache."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import DynamicCache, GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_outputs import CausalLMOutput

from .artifacts import read_config
from .classifier import Classifier, length_sorted_batches
from .decoding import Decoding
from .errors import ConfigError
from .methods import BackboneInputs, MethodConfig, get_method
from .methods.base import place_prompt
from .tasks import Task
from .tasks.data import Row, encode_rows
from .text_pass import after_text, backbone_call, cache_argument, check_nonempty, encode_texts

IGNORED = -100  # label of target padding: no loss there


def check_generation_method(name: str) -> None:
    if not get_method(name).supports_generation:
        raise ConfigError(f"--method {name} trains for classification only; for generation use suffix, prefix, "
                          "deep-prefix, lora, last-blocks or full")


class Generator(Classifier):
    """Writes a target after each source: `[source | prompt | target]` for suffix, `[prompt | source | target]` for
    prefix, the source and target after every layer's trained keys and values for deep-prefix, and
    `[source | target]` through adapted weights for lora, last-blocks and full. The head is the LM's own (`lm`)."""

    task_kind = "generation"
    accepts_loss_kwargs = True  # Trainer passes num_items_in_batch: accumulated steps weigh every target token alike

    @classmethod
    def build(
        cls,
        backbone: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        task: Task,
        method: str = "suffix",
        method_config: MethodConfig | None = None,
        max_length: int = 256,
        max_target_length: int = 96,
    ) -> Generator:
        """A fresh generator for `task`. Sources are cut to `max_length` tokens, and further if the model's context
        cannot hold the source, the prompt and `max_target_length` target tokens: the source gives way, never these."""
        if not task.is_generation:
            raise ConfigError(f"task {task.name!r} is a classification task; Generator writes text for generation tasks")
        check_generation_method(method)
        if max_target_length < 2:
            raise ConfigError(f"--max_target_length must be at least 2 (a token and the end of text), got {max_target_length}")
        generator = super().build(backbone, tokenizer, task, method, method_config, head="lm", max_length=max_length)
        config = generator.classifier_config
        room = backbone.config.max_position_embeddings - generator.method.added_positions - max_target_length
        if room < 1:
            raise ConfigError(
                f"the model holds {backbone.config.max_position_embeddings} positions; --method {method} takes "
                f"{generator.method.added_positions} and --max_target_length {max_target_length}, leaving none for the "
                "source; lower --max_target_length or --prompt_length"
            )
        config.max_length, config.max_target_length = min(config.max_length, room), max_target_length
        return generator

    def longest_row(self) -> int:
        return super().longest_row() + self.classifier_config.max_target_length

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor, num_items_in_batch: int | None = None
    ) -> CausalLMOutput:
        """Cross-entropy of writing `labels` [B, T] (target ids, -100 where padded, either side) after each source:
        the mean over target tokens, or their sum over `num_items_in_batch` (target tokens of all accumulated steps)."""
        order = torch.argsort((labels == IGNORED).to(torch.int8), dim=1, stable=True)
        labels = labels.gather(1, order)  # each target right after its source, padding after it
        written = labels != IGNORED
        hidden = self.target_hidden(input_ids, attention_mask, labels.masked_fill(~written, self.tokenizer.pad_token_id))
        logits = self.head(hidden[written])  # [N, vocabulary] fp32, only where a target token is predicted
        if num_items_in_batch is None:
            return CausalLMOutput(loss=F.cross_entropy(logits, labels[written]))
        return CausalLMOutput(loss=F.cross_entropy(logits, labels[written], reduction="sum") / num_items_in_batch)

    def target_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
        """[B, T, H]: the final hidden state that predicts each target token (the last source or prompt position's,
        then each earlier target token's)."""
        embed = self.backbone.get_input_embeddings()
        target = embed(target_ids)  # [B, T, H]
        if self.runs_text_apart():  # suffix: the source without gradient, then only the prompt and the target
            state = encode_texts(self.backbone, input_ids, attention_mask)
            prompt = self.method.suffix_embeddings().to(target.dtype)
            after = torch.cat([prompt.expand(len(target), -1, -1), target], 1)  # [B, P+T, H]
            steps = torch.arange(after.shape[1], device=after.device)
            hidden = after_text(self.backbone, state, after, torch.zeros_like(steps), steps)
            return hidden[:, len(prompt) - 1 : -1]
        source = self.method(embed(input_ids), attention_mask)
        inputs = append_tokens(source, target)
        with self.method.adapting(inputs):
            hidden = backbone_call(
                self.backbone, inputs.past_key_values, inputs_embeds=inputs.inputs_embeds,
                position_ids=inputs.position_ids, use_cache=False,
            ).last_hidden_state  # [B, L+P+T, H]
        index = source.pool_index[:, None] + torch.arange(target.shape[1], device=hidden.device)  # [B, T]
        return hidden.gather(1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))

    @torch.no_grad()
    def generate(self, rows: Sequence[Row], decoding: Decoding | None = None, batch_size: int = 16) -> list[str]:
        """The text written after each source (a string, or a mapping of the task's source columns)."""
        config = self.classifier_config
        decoding = decoding or Decoding()
        self.new_tokens(decoding)
        was_training = self.training
        self.eval()
        encoded, _ = encode_rows(config.as_task(), rows, self.tokenizer, config.max_length)
        check_nonempty(encoded)
        device = self.backbone.get_input_embeddings().weight.device
        texts: list[str] = [""] * len(rows)
        for chunk, batch in length_sorted_batches(self.tokenizer, encoded, batch_size, device):
            written = self.generate_ids(batch["input_ids"], batch["attention_mask"], decoding)
            for i, text in zip(chunk, self.tokenizer.batch_decode(written, skip_special_tokens=True), strict=True):
                texts[i] = text.strip()
        self.train(was_training)
        return texts

    def new_tokens(self, decoding: Decoding) -> int:
        """The most tokens `decoding` writes: its `max_new_tokens`, or the target length trained for; refused if
        they could run past the model's positions after the longest source."""
        config = self.classifier_config
        room = self.backbone.config.max_position_embeddings - self.method.added_positions - config.max_length
        if decoding.max_new_tokens is not None and decoding.max_new_tokens > room:
            raise ConfigError(f"--max_new_tokens {decoding.max_new_tokens} could run past the model's "
                              f"{self.backbone.config.max_position_embeddings} positions after a source of up to "
                              f"{config.max_length} tokens; at most {room} (train with a larger --max_target_length for more)")
        return decoding.max_new_tokens or config.max_target_length

    def generation_config(self, decoding: Decoding) -> GenerationConfig:
        """Every setting decoding depends on; `generate_with` keeps the checkpoint's own settings out of the call."""
        return GenerationConfig(
            num_beams=decoding.num_beams, do_sample=False, length_penalty=decoding.length_penalty,
            no_repeat_ngram_size=decoding.no_repeat_ngram_size, repetition_penalty=1.0, num_return_sequences=1,
            early_stopping=False, min_new_tokens=0, max_new_tokens=self.new_tokens(decoding),
            pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id,
        )

    @torch.no_grad()
    def generate_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, decoding: Decoding) -> torch.Tensor:
        """[B, new] token ids written after each source by `generate`, from the method's own inputs, left-padded."""
        inputs = self.method(self.backbone.get_input_embeddings()(input_ids), attention_mask)
        embeds, mask = left_padded(inputs)
        if inputs.past_key_values is not None:  # deep prompts: cached positions every row and every beam attends to
            cached = inputs.past_key_values.get_seq_length()
            embeds = torch.cat([embeds.new_zeros(len(embeds), cached, embeds.shape[-1]), embeds], 1)  # generate skips them
            mask = torch.cat([mask.new_ones(len(mask), cached), mask], 1)
            rows = len(embeds) * decoding.num_beams
            cache = DynamicCache(
                [(layer.keys[:1].expand(rows, -1, -1, -1), layer.values[:1].expand(rows, -1, -1, -1)) for layer in inputs.past_key_values.layers]
            )
            return generate_with(self.backbone, embeds, mask, self.generation_config(decoding), cache)
        return generate_with(self.backbone, embeds, mask, self.generation_config(decoding))

    def predict(self, rows, batch_size: int = 64):
        raise ConfigError("a generation artifact writes text: use generate() (`suffixtune generate`), not predict()")

    predict_logits = predict


def generate_with(
    backbone: PreTrainedModel, embeds: torch.Tensor, mask: torch.Tensor, settings: GenerationConfig,
    cache: DynamicCache | None = None,
) -> torch.Tensor:
    """`generate` with `settings` and, of the checkpoint's own generation config, only its special tokens; continuing
    from `cache` where one is given.

    `generate` fills every setting left unset from the checkpoint's config: a `cache_implementation` it then refuses
    beside a cache, `return_dict_in_generate`, `stop_strings`, `suppress_tokens`, ... So for the call it has none.
    """
    checkpoint = backbone.generation_config
    backbone.generation_config = GenerationConfig(
        bos_token_id=checkpoint.bos_token_id, eos_token_id=checkpoint.eos_token_id, pad_token_id=checkpoint.pad_token_id,
        decoder_start_token_id=checkpoint.decoder_start_token_id,
    )
    try:
        return backbone.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=settings,
                                 **({} if cache is None else {cache_argument(backbone): cache}))
    finally:
        backbone.generation_config = checkpoint


def load_artifact(directory: str | os.PathLike, **options) -> Classifier:
    """A saved artifact as its kind needs: a `Generator` for generation, else a `Classifier` (`from_pretrained` options)."""
    kind = read_config(directory).task_kind
    return (Generator if kind == Generator.task_kind else Classifier).from_pretrained(directory, **options)


def append_tokens(inputs: BackboneInputs, tokens: torch.Tensor) -> BackboneInputs:
    """`inputs` with `tokens` [B, T, H] right after each row's real positions; positions continue from the source's."""
    real = torch.arange(inputs.inputs_embeds.shape[1], device=tokens.device) <= inputs.pool_index[:, None]
    placed = place_prompt(inputs.inputs_embeds, real, tokens, before_text=False)
    placed.position_ids = placed.position_ids + inputs.position_ids[:, :1]  # deep prompts start the text at P
    placed.past_key_values = inputs.past_key_values
    return placed


def left_padded(inputs: BackboneInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings, attention mask) of right-padded `inputs` with every row's real positions moved to the end."""
    batch, width, _ = inputs.inputs_embeds.shape
    lengths = inputs.pool_index + 1
    steps = torch.arange(width, device=lengths.device)
    source = (steps[None, :] + lengths[:, None]) % width  # [B, T]: row b's position j comes from here
    embeds = inputs.inputs_embeds.gather(1, source.unsqueeze(-1).expand(-1, -1, inputs.inputs_embeds.shape[-1]))
    return embeds, (steps[None, :] >= width - lengths[:, None]).long()
