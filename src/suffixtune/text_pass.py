"""The shared text pass: a frozen backbone reads each text once; suffixes, pooling and heads run after it.

Because nothing trainable sits before or inside the text, the text's keys and values (and its last hidden states)
are constants. `encode_texts` computes them without gradient, `suffix_hidden` runs only the suffix positions
against them, and `pool` + `head_logits` turn the result into logits. Training (`Classifier`), the text cache and
multi-task inference (`MultiTaskClassifier`) all go through these functions.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel

from .errors import DataError
from .heads import Head


@dataclass
class TextState:
    """What the frozen backbone computed for a batch of texts, right-padded to width L.

    `keys` and `values` hold one [B, kv_heads, L, head_dim] tensor per layer (empty for methods that add no
    positions); `last_hidden` is the final hidden state at each text's last real token, `hidden_sum` (fp32) the sum
    of its final hidden states over real tokens, which mean pooling needs.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    lengths: torch.Tensor  # [B] real tokens per text
    last_hidden: torch.Tensor  # [B, H]
    hidden_sum: torch.Tensor  # [B, H] fp32

    @property
    def mask(self) -> torch.Tensor:
        """[B, L] True at real text tokens."""
        width = self.keys[0].shape[2] if self.keys else int(self.lengths.max())
        return torch.arange(width, device=self.lengths.device) < self.lengths[:, None]


def attention_window(config) -> int | None:
    """The span, in slots, of a model's sliding-window, local or chunked attention layers (Mistral, Gemma 2/3,
    Qwen2 with use_sliding_window, GPT-Neo's local layers, Llama 4's chunks); None when every layer attends to
    every earlier position. A multimodal config is read through its text model's."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    kinds = set(getattr(config, "layer_types", None) or getattr(config, "attention_layers", None) or [])
    if "chunked_attention" in kinds:
        return getattr(config, "attention_chunk_size", None)
    if kinds and not kinds & {"sliding_attention", "local"}:
        return None
    return getattr(config, "sliding_window", None) or (getattr(config, "window_size", None) if "local" in kinds else None)


def within_attention_window(backbone: PreTrainedModel, positions: int) -> bool:
    """Whether rows of up to `positions` slots stay inside every attention window. Only then does a text pass kept
    apart (its cache, a block mask, padding between text and prompt) see what one full pass over the row sees:
    windows count slots, and a sliding layer's cache keeps only its window."""
    window = attention_window(backbone.config)
    return window is None or positions < window


def check_nonempty(token_ids: list[list[int]]) -> None:
    """Every text needs a token: its last one is where a prompt-less head reads, and what a suffix follows."""
    empty = [number for number, ids in enumerate(token_ids, start=1) if not ids]
    if empty:
        raise DataError(f"text {empty[0]} is empty; every text needs at least one token")


def backbone_call(backbone: PreTrainedModel, cache: DynamicCache | None = None, **inputs):
    """`backbone.base_model(...)` with the key/value cache under the name this transformers version takes."""
    if cache is not None:
        inputs[cache_argument(backbone)] = cache
    return backbone.base_model(**inputs)


def cache_argument(backbone: PreTrainedModel) -> str:
    """transformers 5.24 renamed `past_key_values` to `cache` (the old name warns, and goes in 5.40)."""
    return "cache" if "cache" in inspect.signature(backbone.base_model.forward).parameters else "past_key_values"


def output_cache(output) -> DynamicCache:
    return output.cache if getattr(output, "cache", None) is not None else output.past_key_values


def right_padded(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, lengths) with each row's real tokens moved to the front; works for either padding side."""
    mask = attention_mask.bool()
    lengths = mask.sum(1)
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # real tokens first, in their order
    return input_ids.gather(1, order), lengths


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module):
    """No dropout inside: a text's keys and values must not depend on the pass that computed them."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


@torch.no_grad()
def encode_texts(backbone: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep_cache: bool = True) -> TextState:
    """The text pass, without gradient: keys/values (if `keep_cache`) and the hidden states pooling reads.

    Rows are right-padded first, so causal attention alone is exact (pads come after every real token and nothing
    reads them), and positions are 0..len-1 whatever the tokenizer's padding side.
    """
    ids, lengths = right_padded(input_ids, attention_mask)
    positions = torch.arange(ids.shape[1], device=ids.device).expand(len(ids), -1)
    with eval_mode(backbone):  # embeddings, not ids: pads trail every real token, so no mask is needed (nor warned of)
        output = backbone_call(backbone, inputs_embeds=backbone.get_input_embeddings()(ids), position_ids=positions, use_cache=keep_cache)
    hidden = output.last_hidden_state  # [B, L, H]
    real = (torch.arange(ids.shape[1], device=ids.device) < lengths[:, None]).unsqueeze(-1)
    hidden_sum = (hidden.float() * real).sum(1)
    last_hidden = hidden[torch.arange(len(ids), device=ids.device), lengths - 1]
    keys, values = [], []
    if keep_cache:
        for layer in output_cache(output).layers:
            keys.append(layer.keys)
            values.append(layer.values)
    return TextState(keys, values, lengths, last_hidden, hidden_sum)


def suffix_hidden(backbone: PreTrainedModel, state: TextState, prompts: list[torch.Tensor]) -> list[torch.Tensor]:
    """Final hidden states [B, P_k, H] of each suffix prompt [P_k, H], placed after every text, in one pass.

    Only these positions run (with gradient to the prompts); they attend to the text's cached keys and values at
    positions len_b + j. Several suffixes are packed side by side, each seeing the text and its own earlier vectors
    only, so each gets exactly what it would get alone. `state` is not changed.
    """
    packed = torch.cat(prompts).to(backbone.get_input_embeddings().weight.dtype)  # [S, H], as the full pass feeds them
    block, steps = packing(prompts, packed.device)
    hidden = after_text(backbone, state, packed.expand(len(state.lengths), -1, -1), block, steps)
    return list(hidden.split([len(p) for p in prompts], dim=1))


def after_text(backbone: PreTrainedModel, state: TextState, inputs: torch.Tensor, block: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """Final hidden states [B, S, H] of positions `inputs` [B, S, H] run after each text, against its cached keys and
    values: position i sits at len_b + steps[i] and sees the real text and the earlier positions of its `block`."""
    positions = state.lengths[:, None] + steps
    mask = attention_mask_4d(backbone, suffix_block_mask(state.mask, block), inputs.dtype)  # 4D: taken as is, no sync
    cache = DynamicCache(list(zip(state.keys, state.values, strict=True)))  # a fresh cache: the update copies, `state` stays
    return backbone_call(backbone, cache, inputs_embeds=inputs, position_ids=positions, attention_mask=mask, use_cache=True).last_hidden_state


def prompt_states(backbone: PreTrainedModel, state: TextState, prompts: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """`suffix_hidden` for tasks of which some add no prompt (None there)."""
    present = [p for p in prompts if p is not None]
    suffixes = iter(suffix_hidden(backbone, state, present) if present else [])
    return [None if p is None else next(suffixes) for p in prompts]


def method_states(backbone: PreTrainedModel, state: TextState, methods: list) -> list[torch.Tensor | None]:
    """Each method's suffix hidden states: suffixes on the frozen weights packed in one call, and each method that
    adapts the weights at its suffix (`adapts_suffix`, e.g. suffix-lora) in a call of its own, inside `adapting()`."""
    prompts = [m.suffix_embeddings() for m in methods]
    states = prompt_states(backbone, state, [None if m.adapts_suffix else p for m, p in zip(methods, prompts, strict=True)])
    for k, (method, prompt) in enumerate(zip(methods, prompts, strict=True)):
        if method.adapts_suffix and prompt is not None:
            with method.adapting():
                states[k] = suffix_hidden(backbone, state, [prompt])[0]
    return states


def packing(prompts: list[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """([S] which prompt each packed position belongs to, [S] its step j within that prompt), built on `device`
    from Python sizes: nothing waits for the GPU (as repeat_interleave with a device tensor would)."""
    block = torch.cat([torch.full((len(p),), k, device=device) for k, p in enumerate(prompts)])
    steps = torch.cat([torch.arange(len(p), device=device) for p in prompts])
    return block, steps


@torch.no_grad()
def packed_pass(
    backbone: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompts: list[torch.Tensor | None]
) -> tuple[TextState, list[torch.Tensor | None]]:
    """Inference in one call: a pass over [text | suffix 1 | ... | suffix K] per row, with a block mask.

    The same result as `encode_texts` + `suffix_hidden`, without keeping the text's keys and values (a kept cache
    costs a copy of it per layer); returns the text's state (without keys and values) and each prompt's hidden
    states (None where a task adds no prompt).
    """
    ids, lengths = right_padded(input_ids, attention_mask)
    batch, width = ids.shape
    device = ids.device
    inputs = backbone.get_input_embeddings()(ids)  # [B, L, H]
    positions = torch.arange(width, device=device).expand(batch, -1)
    present = [p for p in prompts if p is not None]
    sizes = [len(p) for p in present]
    mask = None
    if present:
        block, steps = packing(present, device)
        inputs = torch.cat([inputs, torch.cat(present).to(inputs.dtype).expand(batch, -1, -1)], 1)  # [B, L+S, H]
        positions = torch.cat([positions, lengths[:, None] + steps], 1)
        text_mask = torch.arange(width, device=device) < lengths[:, None]
        text_rows = torch.cat(
            [(positions[0, :width, None] >= positions[0, None, :width]).expand(batch, -1, -1),
             torch.zeros(batch, width, len(block), dtype=torch.bool, device=device)], -1,
        )  # [B, L, L+S]: the text is causal and sees no suffix
        mask = attention_mask_4d(backbone, torch.cat([text_rows, suffix_block_mask(text_mask, block)], 1), inputs.dtype)
    hidden = backbone_call(backbone, inputs_embeds=inputs, position_ids=positions, attention_mask=mask, use_cache=False).last_hidden_state
    real = (torch.arange(width, device=device) < lengths[:, None]).unsqueeze(-1)
    state = TextState([], [], lengths, hidden[torch.arange(batch, device=device), lengths - 1], (hidden[:, :width].float() * real).sum(1))
    suffixes = iter(hidden[:, width:].split(sizes, dim=1))
    return state, [None if p is None else next(suffixes) for p in prompts]


def suffix_block_mask(text_mask: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
    """[B, S, L+S] True where packed suffix position i may attend: the real text, and its own suffix up to i.

    `block` [S] numbers the suffix each packed position belongs to.
    """
    steps = torch.arange(len(block), device=block.device)
    own = (block[:, None] == block[None, :]) & (steps[None, :] <= steps[:, None])  # [S, S]
    return torch.cat([text_mask[:, None, :].expand(-1, len(block), -1), own.expand(len(text_mask), -1, -1)], -1)


def attention_mask_4d(backbone: PreTrainedModel, allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, Q, K] mask as the backbone's attention takes it as is: boolean for SDPA, additive for eager."""
    if backbone.config._attn_implementation == "eager":
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, torch.finfo(dtype).min).unsqueeze(1)
    return allowed.unsqueeze(1)


def pool(pooling: str, prompt_hidden: torch.Tensor | None, state: TextState) -> torch.Tensor:
    """[B, H] fp32: the hidden state at the last real position, or the mean over the text and the prompt."""
    prompt_length = 0 if prompt_hidden is None else prompt_hidden.shape[1]
    if pooling == "last":
        return (state.last_hidden if prompt_length == 0 else prompt_hidden[:, -1]).float()
    total = state.hidden_sum if prompt_length == 0 else state.hidden_sum + prompt_hidden.float().sum(1)
    return total / (state.lengths + prompt_length)[:, None]


def pool_positions(pooling: str, hidden: torch.Tensor, pool_index: torch.Tensor) -> torch.Tensor:
    """[B, T, H] of a full right-padded pass -> [B, H] fp32, with the same rule as `pool`."""
    if pooling == "last":
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), pool_index].float()
    real = torch.arange(hidden.shape[1], device=hidden.device) <= pool_index[:, None]  # [B, T]
    return (hidden.float() * real.unsqueeze(-1)).sum(1) / real.sum(1, keepdim=True)


def head_logits(head: Head, pooled: torch.Tensor) -> torch.Tensor:
    """[B, C] in fp32, whatever precision the backbone ran in."""
    with torch.autocast(pooled.device.type, enabled=False):
        return head(pooled.float())
