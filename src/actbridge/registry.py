"""Registries of the extension points: one class per injection condition, one per bridge method.

A registry maps names to classes, in the order of their ``order`` attribute (the built-ins set it, so
the default lists keep their order) and then of registration. Its package's ``__init__`` calls
:func:`import_all`, so a new item is one module dropped beside the others: the schema's enums, the
plan, the plots, the summaries, the Snakemake input functions and the docs tables all read the
registry (``actbridge.fingerprint`` counts every module of such a package as imported).
"""

from __future__ import annotations

import importlib
import re
import math
import pkgutil
from typing import Callable, Generic, Iterator, TypeVar

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


DOCS = "config/README.md"
BLOCK = re.compile(r"(<!-- registry: (\S+) -->\n)(.*?)(<!-- end registry -->)", re.DOTALL)


def docs_tables() -> dict[str, str]:
    """The generated tables of the docs, by block name."""
    from actbridge.bridges.methods import markdown_table as methods_table
    from actbridge.injection.conditions import markdown_table as conditions_table

    return {"conditions": conditions_table(), "bridge_methods": methods_table()}


def with_docs_tables(text: str) -> str:
    """``text`` with each ``<!-- registry: NAME -->`` block replaced by the registry's current table."""
    tables = docs_tables()
    return BLOCK.sub(lambda match: match.group(1) + tables[match.group(2)] + match.group(4), text)


if __name__ == "__main__":  # python -m actbridge.registry, from the checkout's root: rewrite config/README.md's tables
    from pathlib import Path

    docs = Path(DOCS)
    docs.write_text(with_docs_tables(docs.read_text()))
