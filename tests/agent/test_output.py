"""Tables, CSV and JSON show what a plugin printed without letting it drive the terminal."""

from __future__ import annotations

import csv
import io
import json

from agent.output import emit

HOSTILE = "CRITICAL \x1b]0;pwned\x07 \x1b[2J\rover\twritten \x9bcsi \x7f\nsecond line"


def rendered(fmt: str) -> str:
    out = io.StringIO()
    emit([{"check": "rogue\x1b[31m", "summary": HOSTILE, "metrics": {"k\x1b": 1}}], fmt, ["check", "summary"], out)
    return out.getvalue()


def controls(text: str) -> list[str]:
    return [c for c in text if (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) < 0xA0]


def test_output_table_cells_escape_every_control_character_and_stay_on_one_line():
    text = rendered("table")
    assert not controls(text)
    assert len(text.splitlines()) == 2, "a cell never spans lines"
    assert "rogue\\x1b[31m" in text
    assert "CRITICAL \\x1b]0;pwned\\x07 \\x1b[2J\\x0dover\\x09written \\x9bcsi \\x7f second line" in text


def test_output_csv_fields_escape_controls_and_keep_a_multiline_field_whole():
    text = rendered("csv")
    assert not controls(text)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 1 and rows[0]["summary"].endswith("\\x7f\nsecond line"), "the newline is quoted, kept"
    assert json.loads(rows[0]["metrics"]) == {"k\x1b": 1}


def test_output_json_escapes_c0_and_c1_and_keeps_the_text():
    text = rendered("json")
    assert not controls(text)
    assert json.loads(text)[0]["summary"] == HOSTILE


def test_output_json_bytes_escape_del_and_c1_only_and_pass_other_text_as_is():
    from agent.plugin.terminal import json_c1_escaped_bytes
    plain = '{"summary":"disk used: / 91.2% at 21 °C, café"}'.encode()
    assert json_c1_escaped_bytes(plain) == plain, "° and é (lead bytes 0xc2, 0xc3) are text, not C1 controls"
    for raw, escaped in (("\x7f", "\\u007f"), ("\x9b", "\\u009b"), ("\x80 °", "\\u0080 °")):
        data = f'{{"summary":"a{raw}b"}}'.encode()
        assert json_c1_escaped_bytes(data) == f'{{"summary":"a{escaped}b"}}'.encode()
        assert json.loads(json_c1_escaped_bytes(data))["summary"] == f"a{raw}b"
