"""The KV channel: the sender's keys and values over its context, mapped layer by layer into the receiver's
space and placed in the receiver's attention cache before its own prompt (as KVComm and Cache-to-Cache move
information between models), scored under the controls and statistics of the residual channel.

* :mod:`~actbridge.kv.shapes`: which cache layouts the channel supports, read without torch;
* :mod:`~actbridge.kv.layout`: a loaded model's cache layout, and rotary embeddings undone and redone;
* :mod:`~actbridge.kv.segments`: each prompt cut into the shared head, the sender's context and the receiver's tail;
* :mod:`~actbridge.kv.entries`: a model's pre-rotary keys and values over token sequences;
* :mod:`~actbridge.kv.maps`: the registered map kinds (``identity``, ``ridge``), fitted per layer pair;
* :mod:`~actbridge.kv.conditions`: the registered conditions of the channel (its controls and upper bound);
* :mod:`~actbridge.kv.channel`: the eval job, scoring every condition of every example.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # hints only: this module is read torch-free, by the statistics too
    import pyarrow as pa

ROLE = "context"  # the role column of the channel's rows: the sender's whole context moves, not one position


def kv_method(kind: str) -> str:
    """The method column of the channel's rows for map ``kind``, beside the residual channel's bridge methods."""
    return f"kv_{kind}"


def kv_pair(sent: str | int) -> str:
    """The pair column of the channel's rows: how many receiver blocks were sent (``all`` or a number)."""
    return f"kv-{sent}"


def site_order(pair: str) -> tuple:
    """Sort key of a site: layer pairs (``s2-r3``) by their layers, then the KV channel's (``kv-<sent>``) by the
    number of blocks sent, ``kv-all`` last."""
    if pair.startswith(kv_pair("")):
        sent = pair[len(kv_pair("")):]
        return (1, float("inf") if sent == "all" else float(sent))
    return (0, *(int(part[1:]) for part in pair.split("-")))


def partial_examples(examples: "pa.Table") -> "pa.Table":
    """The eval rows the channel scores: those whose receiver prompt lacks facts (asymmetric, relay)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from actbridge.data.worlds import PARTIAL_MODES

    return examples.filter(pc.is_in(examples.column("mode"), value_set=pa.array(PARTIAL_MODES)))
