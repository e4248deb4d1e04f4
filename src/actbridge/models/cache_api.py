"""How a model's forward takes a key/value cache, across the transformers releases pyproject.toml allows.

transformers 5.24 renamed the forward keyword ``past_key_values`` to ``cache`` (the old name warns, and goes
in 5.40); before 5.24, ``cache=`` falls into ``**kwargs`` and is silently ignored. So the name is read off
the forward's signature, once per model class, never assumed.
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # hints only
    from torch import nn
    from transformers import Cache


@functools.cache
def _keyword(forward_owner: type) -> str:
    parameters = inspect.signature(forward_owner.forward).parameters
    if "cache" in parameters:
        return "cache"
    if "past_key_values" in parameters:
        return "past_key_values"
    raise TypeError(f"{forward_owner.__name__}.forward takes no key/value cache (neither `cache` nor "
                    "`past_key_values`): a decoder-only transformers model is needed")


def cache_keyword(model: "nn.Module") -> str:
    """``cache`` or ``past_key_values``: the keyword under which ``model``'s forward takes its cache."""
    return _keyword(type(model))


def with_cache(model: "nn.Module", cache: "Cache | None") -> dict[str, "Cache | None"]:
    """The forward keyword arguments that hand ``model`` the key/value ``cache``."""
    return {cache_keyword(model): cache}
