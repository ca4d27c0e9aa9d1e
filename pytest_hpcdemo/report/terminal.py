"""The claim summary as a 120-column terminal shows it: each claim's verdict and test, then its
figures wrapped onto indented lines (the report has them as one row each)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Iterator

from .claims import ClaimRecord

WIDTH = 120
NODEID_COLUMN = 60  # longer test ids overflow their column rather than push every claim's figures right
VERDICT_COLUMN = 12


def claim_lines(records: Iterable[ClaimRecord], width: int = WIDTH) -> Iterator[str]:
    """One claim per paragraph, no line wider than ``width`` unless a single word is."""
    records = list(records)
    column = min(max((len(r.nodeid) for r in records), default=0), NODEID_COLUMN)
    indent = " " * (VERDICT_COLUMN + 3)
    for r in records:
        head = f"{(r.verdict or 'not run').upper():<{VERDICT_COLUMN}} {r.nodeid:<{column}}  "
        if len(head) > width - 20:  # a test id too long to share its line: the figures go below it
            yield head.rstrip()
            head = indent
        yield from _packed(r.line or r.title, head, indent, width)


def _packed(text: str, head: str, indent: str, width: int) -> Iterator[str]:
    """The figures, one "; "-separated part after another, a new line where the next part would
    pass ``width``; a part longer than a whole line is wrapped at spaces."""
    parts = text.split("; ")
    line = head
    for i, part in enumerate(parts):
        piece = part + (";" if i < len(parts) - 1 else "")
        if line.strip() and line != head and len(line) + 1 + len(piece) > width:
            yield line
            line = indent
        elif line == head and len(head) + len(piece) > width and head != indent:
            yield head.rstrip()
            line = indent
        if len(line) + len(piece) > width:
            wrapped = textwrap.wrap(piece, width, initial_indent=line, subsequent_indent=indent,
                                    break_on_hyphens=False)
            yield from wrapped[:-1]
            line = wrapped[-1]
        else:
            line = f"{line}{'' if line in (head, indent) else ' '}{piece}"
    yield line.rstrip()
