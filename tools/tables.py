"""The one markdown-table writer of the reports (data funnel, experiment reports, goldens, benchmarks)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def cell(value) -> str:
    """None -> "-", int -> 1,234, float -> 4 significant digits, anything else as str (pre-format it to choose)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence], align: str = "") -> str:
    """A GitHub markdown table; `align` has one letter per column, "l" or "r" (default: all left)."""
    align = align or "l" * len(header)
    if len(align) != len(header):
        raise ValueError(f"align '{align}' has {len(align)} letters for {len(header)} columns")
    lines = ["| " + " | ".join(header) + " |", "|" + "".join("---:|" if a == "r" else "---|" for a in align)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
