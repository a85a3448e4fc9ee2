"""Rows out as an aligned table, JSON or CSV (the CLI's `--format`)."""

from __future__ import annotations

import json
import sys

FORMATS = ("table", "json", "csv")


def emit(rows: list[dict], fmt: str, table_columns: list[str], out=None) -> None:
    """Print rows; the table shows `table_columns`, JSON and CSV every field."""
    out = out or sys.stdout
    if fmt == "json":
        json.dump(rows, out, indent=1, default=str, ensure_ascii=False)
        out.write("\n")
    elif fmt == "csv":
        import csv
        fields = list(rows[0]) if rows else table_columns
        writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in row.items()})
    else:
        _table(rows, table_columns, out)


def _table(rows: list[dict], columns: list[str], out) -> None:
    if not rows:
        out.write("(none)\n")
        return
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    if out.isatty():
        import shutil
        width = shutil.get_terminal_size((160, 24)).columns
    else:
        width = 10**6
    header = "  ".join(c.upper().ljust(w) for c, w in zip(columns, widths))
    out.write(header.rstrip()[:width] + "\n")
    for r in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()[:width] + "\n")


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value).replace("\n", " ")
