"""Text that came from outside (a plugin's output, a server's answer, a note) made safe to show.

A check's summary can carry anything its target printed: ESC sequences that clear the screen or set the
terminal's title (`\\x1b]0;…\\x07`), `\\r` that overwrites what an operator reads, C1 controls such as
CSI (`\\x9b`). Before such text reaches a table cell, a CSV field or a log line, every C0 and C1 control
character and DEL becomes a visible escape: `\\x1b`, `\\x0d`, `\\x9b` (lower-case hex, as Python writes
them). Tabs too: a tab in a table cell breaks the columns. A newline is kept only where a field is
meant to span lines (a CSV field, which the CSV quoting keeps whole); elsewhere it is escaped as well,
or turned into a space by the caller. The store keeps what the check said; only its display is escaped.
"""

from __future__ import annotations

import re

_CONTROLS = [*range(0x00, 0x20), *range(0x7F, 0xA0)]
_ESCAPES = {code: f"\\x{code:02x}" for code in _CONTROLS}
_ESCAPES_KEEP_NEWLINE = {**_ESCAPES, ord("\n"): "\n"}
_C1 = re.compile("[\x7f-\x9f]")


def printable(text: str, keep_newlines: bool = False) -> str:
    """Given text, return it with every C0/C1 control character and DEL as `\\xNN`; `\\n` stays when
    `keep_newlines` (a multi-line field)."""
    return text.translate(_ESCAPES_KEEP_NEWLINE if keep_newlines else _ESCAPES)


_C1_UTF8 = re.compile(rb"\x7f|\xc2[\x80-\x9f]")


def json_c1_escaped_bytes(data: bytes) -> bytes:
    """`json_c1_escaped` for UTF-8 JSON bytes made of whole objects (a character is never cut in two). Text
    without DEL and without a character of U+0080…U+00BF (lead byte 0xc2), nearly all of it, is found so at
    memchr speed and returned as it is: the pattern scans ten times slower (`history --format json`)."""
    if b"\x7f" not in data and b"\xc2" not in data:
        return data
    return _C1_UTF8.sub(lambda m: b"\\u%04x" % m.group()[-1], data)


def json_c1_escaped(text: str) -> str:
    """Given JSON text, return it with DEL and the C1 controls as `\\u00NN` (JSON encoders escape C0 but
    leave these raw when they write UTF-8; a terminal may act on them). Outside strings JSON has no
    such characters, so a plain replacement keeps the document's meaning."""
    return _C1.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
