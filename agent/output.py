"""Rows out as an aligned table, JSON or CSV (the CLI's `--format`).

One JSON style for every command: a list is a JSON array with one compact object per line (what
`history --format json` streams from SQLite, so grep and jq -c both work); a single document (`status`,
`report`) is an object with one key per line whose lists follow the same rule. Keys are snake_case with the
unit in the name (`duration_seconds`), times ISO 8601 UTC with milliseconds (agent/timefmt.py), statuses lower case,
absent values null. CSV has the same columns and values as the JSON rows.

Cells and fields hold what checks and peers said: control characters are escaped in every format
(see agent/plugin/terminal.py), so a plugin's output cannot drive the operator's terminal. Colour (a table on
a terminal only, never with NO_COLOR set) is added by this module around cells it has escaped.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Callable

from agent.plugin.terminal import json_c1_escaped, printable

FORMATS = ("table", "json", "csv")
Paint = Callable[[dict, str], str | None]
"""(row, column) → an SGR colour code such as "31" for that cell, or None."""


def emit(rows: list[dict], fmt: str, table_columns: list[str], out=None, headers: dict[str, str] | None = None,
         paint: Paint | None = None) -> None:
    """Print rows; the table shows `table_columns` (titled by `headers` where given, else the upper-cased
    name), JSON and CSV every field."""
    out = out or sys.stdout
    if fmt == "json":
        out.write(json_lines(rows))
    elif fmt == "csv":
        import csv
        fields = list(rows[0]) if rows else table_columns
        writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: csv_field(v) for k, v in row.items()})
    else:
        _table(rows, table_columns, out, headers or {}, paint if paint and use_colour(out) else None)


def json_lines(rows: list) -> str:
    """A JSON array, one compact object per line (C1 controls escaped like every other JSON output)."""
    if not rows:
        return "[]\n"
    return "[\n" + ",\n".join(json_value(row) for row in rows) + "\n]\n"


def json_document(data: dict) -> str:
    """An object (`status`, `report`): one top-level key per line, a list of objects under a key one
    object per line, like every list."""
    parts = []
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            text = "[\n" + ",\n".join(json_value(item) for item in value) + "\n]"
        else:
            text = json_value(value)
        parts.append(f"{json_value(key)}:{text}")
    return "{" + ",\n".join(parts) + "}\n"


def json_value(value) -> str:
    return json_c1_escaped(json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False))


def use_colour(out) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set to anything (https://no-color.org)."""
    return bool(getattr(out, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR")


def csv_field(value):
    """A CSV field: structures as ASCII JSON (every control character escaped), text with its control
    characters escaped (newlines kept: the CSV quoting holds a multi-line field together)."""
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, str):
        return printable(value, keep_newlines=True)
    return value


def _table(rows: list[dict], columns: list[str], out, headers: dict[str, str], paint: Paint | None) -> None:
    if not rows:
        out.write("(none)\n")
        return
    titles = [headers.get(c, c.replace("_", " ").upper()) for c in columns]
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(t), *(len(r[i]) for r in cells)) for i, t in enumerate(titles)]
    if out.isatty():
        import shutil   # here: a piped listing never needs the terminal size
        width = shutil.get_terminal_size((160, 24)).columns
    else:
        width = 10**6
    out.write(_line([(t, None) for t in titles], widths, width) + "\n")
    for row, r in zip(rows, cells):
        out.write(_line([(v, paint(row, c) if paint else None) for v, c in zip(r, columns)], widths, width) + "\n")


def _line(cells: list[tuple[str, str | None]], widths: list[int], width: int) -> str:
    """Padded cells joined by two spaces, cut at the terminal's width; a colour wraps only visible text."""
    parts, used = [], 0
    for index, ((text, colour), w) in enumerate(zip(cells, widths)):
        text = text if index == len(cells) - 1 else text.ljust(w)
        sep = "  " if index else ""
        room = width - used - len(sep)
        if room <= 0:
            break
        text = text[:room]
        used += len(sep) + len(text)
        stripped = text.rstrip()
        parts.append(sep + (f"\x1b[{colour}m{stripped}\x1b[0m{text[len(stripped):]}" if colour and stripped
                            else text))
    return "".join(parts).rstrip()


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return printable(str(value).replace("\n", " "))
