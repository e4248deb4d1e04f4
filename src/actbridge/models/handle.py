"""One model as a job uses it: built once, passed as one object.

A job that runs a model needs, beside the weights, what its tokenizer puts before a prompt (a BOS for
Gemma and Llama, nothing for GPT-NeoX), the id it pads batches with, and its shape. Each is derived
here once per loaded model; every stage reads it from the handle instead of re-deriving it from the
tokenizer (extraction, scoring, injection, the causal jobs and the trained bridge all encode a prompt
through :meth:`ModelHandle.prompt_ids`, so they read the same tokens at the same positions).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Mapping, Sequence

from actbridge.models.encoding import continuation_ids, encode_continuations, prompt_token_ids, special_prefix

if TYPE_CHECKING:  # hints only
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class ModelHandle:
    """Weights, tokenizer, the tokenizer's leading special tokens, the pad id and the shape of one model."""

    model: "PreTrainedModel | None"  # None: a handle for tokenization only (:meth:`for_tokenizer`)
    tokenizer: "PreTrainedTokenizerBase"
    prefix: tuple[int, ...]  # the ids the tokenizer puts before any text
    pad_id: int  # what batches are padded with (never attended to)
    shape: Mapping[str, int]  # num_layers, hidden_size, vocab_size

    @classmethod
    def of(cls, model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase") -> "ModelHandle":
        config = model.config.get_text_config()
        shape = {"num_layers": int(config.num_hidden_layers),
                 "hidden_size": int(model.get_input_embeddings().embedding_dim),
                 "vocab_size": int(model.get_output_embeddings().weight.shape[0])}
        return replace(cls.for_tokenizer(tokenizer), model=model, shape=shape)

    @classmethod
    def for_tokenizer(cls, tokenizer: "PreTrainedTokenizerBase") -> "ModelHandle":
        """A handle without weights: what encoding a prompt and finding its role positions need."""
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return cls(None, tokenizer, tuple(special_prefix(tokenizer)), pad_id, {})

    @property
    def device(self) -> "torch.device":
        return next(self.model.parameters()).device

    def prompt_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        """Each prompt's ids: the leading special tokens, then the text's own tokens."""
        return prompt_token_ids(self.tokenizer, prompts, prefix=self.prefix)

    def continuation_ids(self, continuations: Sequence[str]) -> list[list[int]]:
        """Token ids of ``" " + c`` for each continuation, encoded apart from any prompt."""
        return continuation_ids(self.tokenizer, continuations)

    def encode_continuations(self, prompt: str, continuations: Sequence[str]) -> list[tuple[list[int], int]]:
        """Token ids of ``prompt + " " + c`` and the index where the continuation starts (the prompt encoded
        alone, so every candidate shares its tokens exactly)."""
        return encode_continuations(self.tokenizer, prompt, continuations, prefix=self.prefix)
