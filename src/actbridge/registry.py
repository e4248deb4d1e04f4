"""Registries of the extension points: one class per injection condition, one per bridge method.

A registry maps names to classes, in the order of their ``order`` attribute (the built-ins set it, so
the default lists keep their order) and then of registration. Its package's ``__init__`` calls
:func:`import_all`, so a new item is one module dropped beside the others: the schema's enums, the
plan, the plots, the summaries, the Snakemake input functions and the docs tables all read the
registry. This module imports nothing of ours: :mod:`actbridge.catalog` gathers the registries.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from typing import Any, Callable, Generic, Iterator, Mapping, TypeVar

T = TypeVar("T")


class UnknownName(ValueError, LookupError):
    """A name no item of a registry has; the message names the config key and what is allowed."""


class Registry(Generic[T]):
    """Named classes of one kind (``kind`` names it in errors and in the config key that chooses them)."""

    def __init__(self, kind: str, config_key: str):
        self.kind = kind
        self.config_key = config_key
        self._items: dict[str, type[T]] = {}

    def register(self, item: type[T]) -> type[T]:
        """Class decorator: register ``item`` under ``item.name``."""
        name = getattr(item, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.kind} needs a class attribute `name`")
        if name in self._items and self._items[name] is not item:
            raise ValueError(f"{self.kind} {name!r} is registered twice: {self._items[name]} and {item}")
        self._items[name] = item
        return item

    def __getitem__(self, name: str) -> type[T]:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownName(f"config key {self.config_key}: unknown {self.kind} {name!r}; "
                           f"allowed: {list(self._items)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        """The names, as a mapping's keys."""
        return iter(self.names())

    def values(self) -> list[type[T]]:
        return self._ordered()

    def __len__(self) -> int:
        return len(self._items)

    def _ordered(self) -> list[type[T]]:
        """By the items' ``order`` attribute (absent: after those that have one), then registration order."""
        ranked = sorted(enumerate(self._items.values()), key=lambda pair: (getattr(pair[1], "order", math.inf), pair[0]))
        return [item for _, item in ranked]

    def names(self, where: Callable[[type[T]], bool] | None = None) -> tuple[str, ...]:
        """Registered names in order (see ``_ordered``), those ``where`` accepts if given."""
        return tuple(item.name for item in self._ordered() if where is None or where(item))


def import_all(package: str) -> None:
    """Import every module of ``package`` (sorted by name), so that each registers what it defines."""
    module = importlib.import_module(package)
    for info in sorted(pkgutil.iter_modules(module.__path__), key=lambda info: info.name):
        importlib.import_module(f"{package}.{info.name}")


class UndeclaredKey(KeyError):
    """An item read a config key it did not declare: a test error, never a silent default."""


class ItemKeys(Mapping[str, Any]):
    """The validated config keys of one item (a condition's ``injection.<name>.*``, the ``bridge.*`` keys a
    method reads), and no other: reading any key it did not declare raises :class:`UndeclaredKey`, ``get``
    included, so a key an item forgot to declare fails its tests instead of falling back to a default."""

    def __init__(self, owner: str, section: str, values: Mapping[str, Any]):
        self.owner, self.section = owner, section
        self._values = dict(values)

    def __getitem__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise UndeclaredKey(f"{self.owner} read {self.section}.{key}, which it does not declare; declared: "
                                f"{sorted(self._values)}") from None

    def get(self, key: str, default: Any = None) -> Any:
        return self[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"ItemKeys({self.owner}: {self._values!r})"
