"""Fitting a KV map: both models read the same texts, their entries are paired at word ends, and the map kind
is fitted per receiver block from the streaming moments (memory: the moments, whatever the number of texts).

Each receiver block ``j`` is paired with one sender block by relative depth (:func:`paired_sender_blocks`).
The same pass gives the receiver's mean entry per block, which the ``kv_mean`` control injects.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from actbridge.bridges.maps import Moments
from actbridge.bridges.solvers import moment_mse
from actbridge.io import atomic_path, write_json
from actbridge.kv.entries import unrotated_entries
from actbridge.kv.layout import CacheLayout
from actbridge.kv.maps import KV_MAPS, AffineMap, shapes_problem
from actbridge.kv.segments import word_aligned_ids
from actbridge.logs import Progress
from actbridge.models.edited_scoring import trunk_cache

log = logging.getLogger(__name__)


def paired_sender_blocks(n_sender: int, n_receiver: int) -> list[int]:
    """The sender block paired with each receiver block: the same relative depth (first with first, last with
    last)."""
    if n_receiver == 1:
        return [n_sender - 1]
    return [int(round(j * (n_sender - 1) / (n_receiver - 1))) for j in range(n_receiver)]


def layout_shape(layout: CacheLayout) -> dict[str, int]:
    return {"num_layers": layout.num_layers, "kv_heads": layout.kv_heads, "head_dim": layout.head_dim}


@dataclass
class FittedKVMap:
    """A map kind fitted for every receiver block, keys and values apart, with the receiver's mean entries."""

    kind: str
    sender_blocks: list[int]  # per receiver block
    keys: list[AffineMap]
    values: list[AffineMap]
    mean_keys: list[np.ndarray]  # per receiver block [width_r], before rotation
    mean_values: list[np.ndarray]
    sender_shape: dict[str, int]
    receiver_shape: dict[str, int]
    info: dict = field(default_factory=dict)
    _tensors: dict = field(default_factory=dict, repr=False, compare=False)  # (device, what, block) -> weights

    def apply(self, block: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Receiver block ``block``'s (keys, values) [kv_heads_r, m, head_dim_r] from its paired sender block's
        [kv_heads_s, m, head_dim_s] (keys before rotation), float32."""
        heads, head_dim = self.receiver_shape["kv_heads"], self.receiver_shape["head_dim"]

        def mapped(entries: torch.Tensor, what: str, affine: AffineMap) -> torch.Tensor:
            flat = entries.permute(1, 0, 2).reshape(entries.shape[1], -1).float()  # [m, width_s]
            weight, bias = self._on(flat.device, what, block, affine)
            return (flat @ weight + bias).reshape(-1, heads, head_dim).permute(1, 0, 2)

        return mapped(keys, "keys", self.keys[block]), mapped(values, "values", self.values[block])

    def _on(self, device, what: str, block: int, affine: AffineMap) -> tuple[torch.Tensor, torch.Tensor]:
        """A block's weight and bias as float32 tensors on ``device``, copied there once."""
        key = (str(device), what, block)
        if key not in self._tensors:
            self._tensors[key] = (torch.as_tensor(affine.weight, dtype=torch.float32, device=device),
                                  torch.as_tensor(affine.bias, dtype=torch.float32, device=device))
        return self._tensors[key]

    def mean(self, block: int, count: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The receiver's mean (keys, values) of ``block``, ``count`` times: [kv_heads_r, count, head_dim_r]."""
        heads, head_dim = self.receiver_shape["kv_heads"], self.receiver_shape["head_dim"]
        key = (str(device), "mean", block)
        if key not in self._tensors:
            self._tensors[key] = tuple(torch.as_tensor(np.asarray(vector), dtype=torch.float32, device=device)
                                       .reshape(heads, 1, head_dim) for vector in (self.mean_keys[block],
                                                                                   self.mean_values[block]))
        return tuple(entry.expand(heads, count, head_dim) for entry in self._tensors[key])

    def save(self, directory: str | Path, provenance: Mapping[str, Any]) -> None:
        """``map.safetensors`` (float32) and ``map.json`` (kind, pairing, shapes, fit info, what produced it)."""
        from safetensors.numpy import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for j in range(len(self.sender_blocks)):
            for what, affine in (("keys", self.keys[j]), ("values", self.values[j])):
                tensors[f"{what}.weight.{j}"] = np.ascontiguousarray(affine.weight, np.float32)
                tensors[f"{what}.bias.{j}"] = np.ascontiguousarray(affine.bias, np.float32)
            tensors[f"mean.keys.{j}"] = np.ascontiguousarray(self.mean_keys[j], np.float32)
            tensors[f"mean.values.{j}"] = np.ascontiguousarray(self.mean_values[j], np.float32)
        with atomic_path(directory / "map.safetensors") as tmp:
            save_file(tensors, str(tmp))
        write_json({"kind": self.kind, "sender_blocks": self.sender_blocks, "sender_shape": self.sender_shape,
                    "receiver_shape": self.receiver_shape, "info": self.info,
                    "blocks": [{"keys": self.keys[j].info, "values": self.values[j].info}
                               for j in range(len(self.sender_blocks))], **provenance}, directory / "map.json")

    @classmethod
    def load(cls, directory: str | Path) -> "FittedKVMap":
        from safetensors.numpy import load_file

        directory = Path(directory)
        tensors = load_file(str(directory / "map.safetensors"))
        meta = json.loads((directory / "map.json").read_text())
        blocks = range(len(meta["sender_blocks"]))

        def affine(what: str, j: int) -> AffineMap:
            return AffineMap(tensors[f"{what}.weight.{j}"].astype(np.float64),
                             tensors[f"{what}.bias.{j}"].astype(np.float64), meta["blocks"][j][what])

        return cls(meta["kind"], list(meta["sender_blocks"]), [affine("keys", j) for j in blocks],
                   [affine("values", j) for j in blocks], [tensors[f"mean.keys.{j}"] for j in blocks],
                   [tensors[f"mean.values.{j}"] for j in blocks], meta["sender_shape"], meta["receiver_shape"],
                   meta.get("info", {}))


@dataclass
class BlockMoments:
    """Per receiver block, the moments of (paired sender entries, receiver entries), keys and values apart."""

    keys: list[Moments]
    values: list[Moments]


def aligned_batches(sender, receiver, texts: Sequence[str], *, batch_tokens: int
                    ) -> Iterator[tuple[list[list[int]], list[list[int]], list[list[int]], list[list[int]]]]:
    """(sender ids, sender word ends, receiver ids, receiver word ends) of consecutive texts, as many per batch
    as fit ``batch_tokens`` padded tokens over both models' passes."""
    sender_ids, sender_ends = word_aligned_ids(sender, texts)
    receiver_ids, receiver_ends = word_aligned_ids(receiver, texts)
    start = 0
    while start < len(texts):
        stop, longest = start, 0
        while stop < len(texts):
            longest = max(longest, len(sender_ids[stop]) + len(receiver_ids[stop]))
            if stop > start and longest * (stop - start + 1) > batch_tokens:
                break
            stop += 1
        yield (sender_ids[start:stop], sender_ends[start:stop], receiver_ids[start:stop], receiver_ends[start:stop])
        start = stop


def block_moments(sender, receiver, texts: Sequence[str], sender_blocks: Sequence[int], *, batch_tokens: int,
                  what: str) -> BlockMoments:
    """The moments of both models' entries at the word ends of ``texts``, per receiver block."""
    sender_layout, receiver_layout = CacheLayout.of(sender.model, role="sender"), CacheLayout.of(receiver.model)
    n_blocks = receiver_layout.num_layers
    moments = BlockMoments([Moments.zeros(sender_layout.width, receiver_layout.width, False) for _ in range(n_blocks)],
                           [Moments.zeros(sender_layout.width, receiver_layout.width, False) for _ in range(n_blocks)])
    progress = Progress(len(texts), f"KV entries of {what}")
    for sender_ids, sender_ends, receiver_ids, receiver_ends in aligned_batches(sender, receiver, texts,
                                                                                batch_tokens=batch_tokens):
        for ends_s, ends_r in zip(sender_ends, receiver_ends):
            if len(ends_s) != len(ends_r):
                raise ValueError("the two models' word ends differ in number")  # both split the same words
        sender_entries = unrotated_entries(sender.model, sender_layout,
                                           trunk_cache(sender.model, sender_ids, sender.pad_id))
        receiver_entries = unrotated_entries(receiver.model, receiver_layout,
                                             trunk_cache(receiver.model, receiver_ids, receiver.pad_id))

        def gathered(entries: torch.Tensor, ends: list[list[int]]) -> np.ndarray:
            rows = torch.as_tensor([r for r, row in enumerate(ends) for _ in row], device=entries.device)
            columns = torch.as_tensor([p for row in ends for p in row], device=entries.device)
            picked = entries[rows, :, columns]  # [n, kv_heads, head_dim]
            return picked.reshape(len(picked), -1).double().cpu().numpy()

        for j in range(n_blocks):
            i = sender_blocks[j]
            for side, moment in ((0, moments.keys[j]), (1, moments.values[j])):
                moment.update(gathered(sender_entries[i][side], sender_ends),
                              gathered(receiver_entries[j][side], receiver_ends))
        progress.update(len(sender_ids))
    return moments


def explained(moments: Moments, affine: AffineMap) -> float:
    """R² of the map on ``moments`` (1 - MSE / total variance of the targets)."""
    variance = moments.yy_trace / moments.n - float(moments.mean_y @ moments.mean_y)
    return 1.0 - moment_mse(moments, affine.weight, affine.bias) / variance if variance > 0 else float("nan")


def shared_texts(table) -> list[str]:
    """The texts a map is fitted on: the ``shared`` rows' full prompts (both models read the same text)."""
    modes = table.column("mode").to_pylist()
    return [text for text, mode in zip(table.column("full_prompt").to_pylist(), modes) if mode == "shared"]


@torch.inference_mode()
def fit_kv_map(kind: str, sender, receiver, train_texts: Sequence[str], val_texts: Sequence[str], *,
               settings: Mapping[str, Any] | None = None, batch_tokens: int) -> FittedKVMap:
    """Map ``kind`` fitted from both models' entries on ``train_texts``, chosen and scored on ``val_texts``."""
    chosen = KV_MAPS[kind]
    sender_layout, receiver_layout = CacheLayout.of(sender.model, role="sender"), CacheLayout.of(receiver.model)
    sender_shape, receiver_shape = layout_shape(sender_layout), layout_shape(receiver_layout)
    problem = shapes_problem(kind, sender_shape, receiver_shape)
    if problem:
        raise ValueError(problem)
    blocks = paired_sender_blocks(sender_layout.num_layers, receiver_layout.num_layers)
    train = block_moments(sender, receiver, train_texts, blocks, batch_tokens=batch_tokens, what="bridge_train")
    val = block_moments(sender, receiver, val_texts, blocks, batch_tokens=batch_tokens, what="bridge_val")
    keys = chosen.settings(settings)
    fitted = {"keys": [], "values": []}
    for what, per_block in (("keys", zip(train.keys, val.keys)), ("values", zip(train.values, val.values))):
        for train_moments, val_moments in per_block:
            affine = chosen().fit(train_moments, val_moments, keys)
            affine.info = {"penalty": affine.info.get("penalty"), "val_r2": explained(val_moments, affine),
                           "train_rows": train_moments.n}
            fitted[what].append(affine)
    for j in range(receiver_layout.num_layers):
        log.info("block %d (sender %d): val R² keys %.3f, values %.3f", j, blocks[j],
                 fitted["keys"][j].info["val_r2"], fitted["values"][j].info["val_r2"])
    return FittedKVMap(kind, blocks, fitted["keys"], fitted["values"], [m.mean_y for m in train.keys],
                       [m.mean_y for m in train.values], sender_shape, receiver_shape,
                       {"train_texts": len(train_texts), "val_texts": len(val_texts)})
