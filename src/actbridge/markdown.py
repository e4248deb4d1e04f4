"""Shared pieces of the reports: number and interval cells, Markdown tables from a polars frame, and a frame
back to a pyarrow table of a fixed schema.

Every renderer (summaries, verdict, causal profiles, dataset statistics, bridge metrics) formats its
cells through these, so a Δ, an interval or a missing value reads the same in every report. polars is
imported where a frame is built, not here: the bridge jobs import this module and stay light.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable, Sequence

if TYPE_CHECKING:  # hints only
    import polars as pl
    import pyarrow as pa

MISSING = "n/a"


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def number(value: float | None, *, scale: float = 1.0, decimals: int = 3, signed: bool = True,
           missing: str | None = MISSING) -> str:
    """``value * scale`` with ``decimals`` decimals (``+``-signed unless ``signed`` is false); ``missing`` for
    None or a non-finite value, or, with ``missing=None``, the value formatted as it is (``+nan``)."""
    if missing is not None and not finite(value):
        return missing
    return f"{value * scale:{'+' if signed else ''}.{decimals}f}"


def interval(value: float | None, low: float | None, high: float | None, *, scale: float = 1.0, decimals: int = 2,
             missing: str | None = MISSING) -> str:
    """``+1.20 [-0.40, +2.80]``: each number as :func:`number` gives it."""
    cells = [number(x, scale=scale, decimals=decimals, missing=missing) for x in (value, low, high)]
    return f"{cells[0]} [{cells[1]}, {cells[2]}]"


def points(value: float | None, low: float | None = None, high: float | None = None) -> str:
    """A fraction in points, one decimal, with its interval where given: ``+12.5 [+3.0, +22.0]``; ``n/a``
    where the value itself is missing (the bounds are then not shown)."""
    if not finite(value):
        return MISSING
    if low is None:
        return number(value, scale=100, decimals=1)
    return interval(value, low, high, scale=100, decimals=1, missing=None)


def ci_side(low: float, high: float) -> str:
    """Where an interval lies relative to zero: ``> 0``, ``< 0`` or ``crosses 0``."""
    if low > 0:
        return "> 0"
    if high < 0:
        return "< 0"
    return "crosses 0"


def ci_cell(row: dict, scale: float, decimals: int = 2) -> str:
    """``+1.20 [-0.40, +2.80] crosses 0`` from the crossed-bootstrap interval (``delta``, ``boot_low``,
    ``boot_high``)."""
    return (f"{interval(row['delta'], row['boot_low'], row['boot_high'], scale=scale, decimals=decimals)} "
            f"{ci_side(row['boot_low'], row['boot_high'])}")


def table_lines(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A Markdown table: the header, its rule, and one line per row of cells."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


def frame_lines(frame: "pl.DataFrame", header: Sequence[str] | None = None) -> list[str]:
    """A Markdown table of a frame whose columns are the (string) cells, in order; the column names are the
    header unless ``header`` is given."""
    return table_lines(frame.columns if header is None else header, frame.iter_rows())


def to_arrow(frame: "pl.DataFrame", schema: "pa.Schema") -> "pa.Table":
    """``frame`` as a pyarrow table of exactly ``schema``: its columns selected in order and cast (polars'
    large strings to strings, its int64 to the schema's widths)."""
    return frame.select(schema.names).to_arrow().cast(schema).combine_chunks()

