"""Which layers are extracted and which layer pairs are bridged (no torch: the workflow imports this at parse time)."""

from __future__ import annotations

import re
from typing import Sequence

PAIR_PATTERN = re.compile(r"^s(\d+)-r(\d+)$")


def resolve_layers(requested: str | Sequence[int], n_layers: int) -> tuple[int, ...]:
    """``all`` -> 0..n_layers (embeddings plus every block); a list is checked against the model."""
    if requested == "all":
        return tuple(range(n_layers + 1))
    layers = tuple(sorted({int(layer) for layer in requested}))
    bad = [layer for layer in layers if not 0 <= layer <= n_layers]
    if bad:
        raise ValueError(f"activations.layers {bad} out of range for a model with {n_layers} layers "
                         f"(0 = embeddings .. {n_layers})")
    return layers


def layers_for(requested: str | list | dict, model: str) -> str | list:
    """``activations.layers`` for one model: the same for both, or per model."""
    return requested[model] if isinstance(requested, dict) else requested


def pair_name(sender_layer: int, receiver_layer: int) -> str:
    return f"s{sender_layer}-r{receiver_layer}"


def parse_pair(name: str) -> tuple[int, int]:
    match = PAIR_PATTERN.match(name)
    if match is None:
        raise ValueError(f"layer pair {name!r} is not of the form s<sender layer>-r<receiver layer>")
    return int(match.group(1)), int(match.group(2))


def relative_depth_pairs(sender_layers: Sequence[int], n_sender: int, n_receiver: int) -> list[tuple[int, int]]:
    """Sender layer i <-> receiver layer round(i * L_r / L_s), for each extracted sender layer."""
    return [(i, int(round(i * n_receiver / n_sender))) for i in sender_layers]


def layer_pairs(spec: str | list, sender_layers: Sequence[int], receiver_layers: Sequence[int], *,
                n_sender: int, n_receiver: int) -> list[tuple[int, int]]:
    """``bridge.pairs`` resolved against the extracted layers; a pair outside them is an error naming the key."""
    if spec == "relative_depth":
        pairs = relative_depth_pairs(sender_layers, n_sender, n_receiver)
    elif spec == "grid":
        pairs = [(i, j) for i in sender_layers for j in receiver_layers]
    else:
        pairs = [(int(i), int(j)) for i, j in spec]
    beyond = [(i, j) for i, j in pairs if not (0 <= i <= n_sender and 0 <= j <= n_receiver)]
    if beyond:
        raise ValueError(f"config key bridge.pairs: pairs {beyond} name layers the models do not have (sender "
                         f"0..{n_sender}, receiver 0..{n_receiver}; 0 is the embeddings, n the last block)")
    missing = [(i, j) for i, j in pairs if i not in sender_layers or j not in receiver_layers]
    if missing:
        raise ValueError(f"config key bridge.pairs: pairs {missing} use layers that are not extracted "
                         f"(sender {list(sender_layers)}, receiver {list(receiver_layers)}); "
                         "add them to activations.layers")
    return list(dict.fromkeys(pairs))
