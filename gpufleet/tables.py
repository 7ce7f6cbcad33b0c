"""Tables for people that never cut a figure or a name, whatever the terminal's width.

Rich shrinks every column of a table wider than the console and cuts what no longer fits with an ellipsis
(``1.0…``, ``yol…``). Here each column is exactly as wide as its widest cell (a header wraps between its words
instead), and when the columns do not fit the console side by side they are dealt into several tables, one after
the other, each repeating the key columns (the ones that say which row is which) and titled as the continuation of
the first. Only a column declared as prose wraps, between words.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rich.console import Console
from rich.table import Table
from rich.text import Text


UNBOUNDED = 1_000_000


@dataclass(frozen=True)
class Column:
    header: str
    justify: Literal["left", "right"] = "left"
    prose: bool = False  # wraps between words; a figure or a name never does


def _width(cell: str) -> int:
    return max((Text.from_markup(line).cell_len for line in cell.splitlines()), default=0)


def _longest_word(cell: str) -> int:
    return max((Text.from_markup(word).cell_len for word in cell.split()), default=0)


def _table(title: str, columns: Sequence[Column], widths: Sequence[int], rows: Sequence[Sequence[str]],
           picked: Sequence[int]) -> Table:
    table = Table(title=title, title_justify="left")
    for i in picked:
        c = columns[i]
        if c.prose:
            table.add_column(c.header, justify=c.justify, min_width=widths[i], overflow="fold")
        else:  # exactly its widest cell: the header wraps at its spaces, a cell never wraps
            table.add_column(c.header, justify=c.justify, width=widths[i], overflow="fold")
    for row in rows:
        table.add_row(*(row[i] for i in picked))
    return table


def split_table(console: Console, title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]],
                keys: int = 1) -> list[Table]:
    """The tables to print: one when every column fits ``console.width``, else the first ``keys`` columns with as
    many of the others as fit, in order, then the keys again with the next ones, and so on."""
    widths = []
    for i, c in enumerate(columns):
        cells = [row[i] for row in rows]
        words = max([_longest_word(c.header)] + [_longest_word(x) for x in cells])
        widths.append(words if c.prose else max([words] + [_width(x) for x in cells]))

    # Measured without the console's limit, which rich would meet by shrinking every column (fixed ones too).
    unbounded = console.options.update_width(UNBOUNDED)

    def fits(picked: list[int]) -> bool:
        table = _table(title, columns, widths, rows, picked)
        return console.measure(table, options=unbounded).minimum <= console.width

    key_cols = list(range(min(keys, len(columns))))
    parts: list[list[int]] = [list(key_cols)]
    for i in range(len(key_cols), len(columns)):
        if fits(parts[-1] + [i]) or len(parts[-1]) == len(key_cols):
            parts[-1].append(i)  # a column too wide even beside the keys alone still gets a table (folded)
        else:
            parts.append(key_cols + [i])
    return [_table(title if n == 0 else f"{title} (continued)", columns, widths, rows, picked)
            for n, picked in enumerate(parts)]


def print_table(console: Console, title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]],
                keys: int = 1) -> None:
    for table in split_table(console, title, columns, rows, keys):
        console.print(table)
