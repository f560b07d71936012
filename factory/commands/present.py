"""Text and plot helpers every command's output shares: Markdown tables, the boxed summary table,
numbers as text, matplotlib (headless) figures as PNG bytes.

    markdown(["model", "score"], [["base", 61.2]])     # a Markdown table, names left, numbers right
    markdown_tables([Table("Judges", ["judge", "ok"], [["judge", 40]], note="...")])   # titled tables
    table([("pairs kept", "21")], "factory run summary")   # the boxed table a command ends with
    png(fig)                                           # PNG bytes of a figure made with pyplot()
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def cell(text: str) -> str:
    """A value as a Markdown table cell: a `|` would end the cell, a newline the row, and `<` open markup
    (a judge's tag or a prompt's text is any string), so they are escaped."""
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "<br>")


def markdown(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[cell(str(h)) for h in headers]]
    cells += [[cell(v) if isinstance(v, str) else num(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    # Names sit left, numbers right.
    lines += [
        "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) + " |"
        for row in cells[1:]
    ]
    return "\n".join(lines)


@dataclass
class Table:
    """A report table as data, rendered by markdown_tables here and by the page (factory/commands/page_html.py):
    `title` its heading ('' = it goes on under the previous one), `note` a sentence before it, `after` one
    after it, `place` where the page shows it (tables or judges). Cells are values (numbers are formatted by
    each renderer) or text."""

    title: str
    headers: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    note: str = ""
    after: str = ""
    place: str = "tables"


def markdown_tables(tables: list[Table]) -> str:
    """Each table under its `## title`, its note before and its after-sentence below."""
    out: list[str] = []
    for t in tables:
        out += [f"## {t.title}", ""] if t.title else []
        out += [t.note, ""] if t.note else []
        out += [markdown(t.headers, t.rows), ""]
        out += [t.after, ""] if t.after else []
    return "\n".join(out)


def table(rows: list[tuple[str, str]], title: str = "") -> str:
    width = max(len(k) for k, _ in rows)
    value_width = max(len(v) for _, v in rows)
    line = "+" + "-" * (width + 2) + "+" + "-" * (value_width + 2) + "+"
    out = [title] if title else []
    out.append(line)
    out += [f"| {k.ljust(width)} | {v.rjust(value_width)} |" for k, v in rows]
    out.append(line)
    return "\n".join(out)


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return buffer.getvalue()
