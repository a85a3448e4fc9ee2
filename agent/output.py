"""Rows out as an aligned table, JSON or CSV (the CLI's `--format`).

Cells and fields hold what checks and peers said: control characters are escaped in every format
(see agent/terminal.py), so a plugin's output cannot drive the operator's terminal.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys

from agent.terminal import json_c1_escaped, printable

FORMATS = ("table", "json", "csv")


def emit(rows: list[dict], fmt: str, table_columns: list[str], out=None) -> None:
    """Print rows; the table shows `table_columns`, JSON and CSV every field."""
    out = out or sys.stdout
    if fmt == "json":
        out.write(json_c1_escaped(json.dumps(rows, indent=1, default=str, ensure_ascii=False)) + "\n")
    elif fmt == "csv":
        fields = list(rows[0]) if rows else table_columns
        writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: csv_field(v) for k, v in row.items()})
    else:
        _table(rows, table_columns, out)


def csv_field(value):
    """A CSV field: structures as ASCII JSON (every control character escaped), text with its control
    characters escaped (newlines kept: the CSV quoting holds a multi-line field together)."""
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, str):
        return printable(value, keep_newlines=True)
    return value


def _table(rows: list[dict], columns: list[str], out) -> None:
    if not rows:
        out.write("(none)\n")
        return
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    width = shutil.get_terminal_size((160, 24)).columns if out.isatty() else 10**6
    header = "  ".join(c.upper().ljust(w) for c, w in zip(columns, widths))
    out.write(header.rstrip()[:width] + "\n")
    for r in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()[:width] + "\n")


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return printable(str(value).replace("\n", " "))
