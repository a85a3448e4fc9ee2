"""Read a PostgreSQL SQL script (pg_dump output) as segments, chunk by chunk, without ever running psql.

A dump file is data written by another job. psql would execute whatever
backslash command it finds outside a literal — `\\! cmd` runs a shell,
`\\connect db` leaves the database being restored, `\\o file` writes files —
wherever it sits on a line. This reader tokenizes the script the way psql's
lexer does (single-quoted strings with '' and E'' backslash escapes,
double-quoted identifiers, $tag$ dollar quotes, -- and nested /* */ comments,
BEGIN ATOMIC … END bodies, COPY … FROM stdin data up to the `\\.` line) and
yields what the script holds instead of acting on it:

- `Statement`: one SQL statement (split on a top-level `;`), with its tokens
  so a policy can judge it; `copy_in` when it is a `COPY … FROM stdin`, whose
  data follows as `CopyData` chunks and one `CopyEnd`;
- `Connect`: a `\\connect DBNAME` line, for a caller that restores a cluster
  dump to decide on (a single-database restore refuses it).

Any other backslash outside literals, comments and COPY data is a psql
meta-command and raises ScriptRefused with its line and a short excerpt;
`\\restrict KEY`/`\\unrestrict KEY` alone on their line (pg_dump ≥ 15.14 writes
them around its scripts) are accepted and dropped. Memory stays bounded
whatever the script's size: COPY data passes through in the chunks it came
in, and a statement longer than `max_statement_bytes` is refused.
"""

from __future__ import annotations

import re
import unicodedata
from array import array
from dataclasses import dataclass
from typing import Iterable, Iterator, Union

MAX_STATEMENT_BYTES = 64 * 1024 * 1024
MAX_TOKENS = 1_000_000            # per statement: the token index stays under ~10 MiB
_MAX_META_BYTES = 4096            # a meta-command line is refused anyway; this much is enough to show it
_EXCERPT_CHARS = 60

# token kinds (one byte each in Tokens.kinds)
WORD, QUOTED_IDENT, STRING, DOLLAR_STRING, NUMBER, PARAM, OPERATOR, PUNCT = b"wqsdnxop"

_WS = re.compile(rb"[ \t\n\r\f\v]+")
_WORD = re.compile(rb"[A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*")
_NUMBER = re.compile(rb"[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][+-]?[0-9]+)?")
_DOLLAR = re.compile(rb"\$(?:([A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*)?\$|[0-9]+)")
_DOLLAR_PREFIX = re.compile(rb"\$[A-Za-z0-9_\x80-\xff]*\Z")
_OPERATOR = re.compile(rb"(?:[~!@#^&|`?+*%<>=]|-(?!-)|/(?!\*))+")
_E_STRING_END = re.compile(rb"[\\']")
_COMMENT_MARK = re.compile(rb"/\*|\*/")
_LINE_END = re.compile(rb"[\n\r]")
_BLANK = re.compile(rb"[ \t\r\f\v]*")
_META_LINE = re.compile(rb"\\(restrict|unrestrict)[ \t]+[A-Za-z0-9]+[ \t]*\r?")
_CONNECT = re.compile(rb"\\(?:c|connect)(?=[ \t])(.*?)[ \t]*\r?")
_CONNECT_ARG = re.compile(rb'[ \t]+(?:"((?:[^"]|"")*)"|([^ \t"\']+))')
_CONNINFO_DBNAME = re.compile(r"dbname\s*=\s*(?:'((?:[^'\\]|\\.)*)'|(\S+))")
# the common tokens in one match (possessive, so a word is never cut short to dodge a lookahead); a word followed
# by ' or & (E'…', U&'…') and anything that may continue in the next chunk take the slow path below
_FAST = re.compile(rb"""
    ([ \t\n\r\f\v]++)
  | ([A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*+)(?!['&])
  | ([0-9][0-9_]*+(?:\.[0-9_]*+)?(?:[eE][+-]?[0-9]++)?)(?![A-Za-z_$\x80-\xff])
  | ((?:[~!@#^&|`?+*%<>=]|-(?!-)|/(?!\*))++)
  | ('(?:[^']++|'')*+'(?!'))
  | ([(),.:\[\]])
""", re.VERBOSE)
_FAST_KINDS = (None, None, WORD, NUMBER, OPERATOR, STRING, PUNCT)
_FUNCTION_WORDS = {b"create": b"c", b"function": b"f", b"procedure": b"p", b"or": b"o", b"replace": b"r"}
_COPY_TERMINATORS = (b"\\.\n", b"\\.\r\n")

# scanner states
_CODE, _SQUOTE, _ESTRING, _DQUOTE, _DOLLAR_QUOTE, _BLOCK_COMMENT, _LINE_COMMENT, _COPY_DATA, _AFTER_COPY = range(9)


class ScriptRefused(Exception):
    """The script holds something a restore must not run; `line` is 1-based, `excerpt` printable."""

    def __init__(self, line: int, reason: str, excerpt: str = ""):
        super().__init__(f"line {line}: {reason}" + (f": {excerpt}" if excerpt else ""))
        self.line = line
        self.reason = reason
        self.excerpt = excerpt


class ScriptIncomplete(Exception):
    """The script ends inside a statement, a literal, a comment or COPY data (a truncated dump)."""

    def __init__(self, line: int, reason: str):
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


class Tokens:
    """The tokens of one statement: kind bytes and [start, end) offsets into its text."""

    def __init__(self, text: bytes, kinds: bytearray, starts: array, ends: array):
        self.text = text
        self.kinds = kinds
        self.starts = starts
        self.ends = ends

    def __len__(self) -> int:
        return len(self.kinds)

    def kind(self, i: int) -> int | None:
        return self.kinds[i] if 0 <= i < len(self.kinds) else None

    def value(self, i: int) -> bytes:
        """The i-th token's text (b"" past either end)."""
        if not 0 <= i < len(self.kinds):
            return b""
        return self.text[self.starts[i]:self.ends[i]]

    def word(self, i: int) -> str | None:
        """The i-th token as an upper-case keyword when it is a bare word, else None."""
        if self.kind(i) != WORD:
            return None
        return self.value(i).decode("ascii", "replace").upper()

    def depths(self) -> Iterator[tuple[int, int]]:
        """Yield (index, parenthesis depth) for every token, `(` and `)` counted at the outer depth."""
        depth = 0
        for i, kind in enumerate(self.kinds):
            if kind == PUNCT and self.text[self.starts[i]] == 0x29 and depth:     # ")"
                depth -= 1
            yield i, depth
            if kind == PUNCT and self.text[self.starts[i]] == 0x28:               # "("
                depth += 1


@dataclass(frozen=True)
class Statement:
    """One SQL statement without its `;`, from its first token; `copy_in` when COPY data follows."""

    text: bytes
    line: int
    tokens: Tokens
    copy_in: bool = False

    def excerpt(self) -> str:
        """The statement's start, printable, with the literal after any PASSWORD masked."""
        window = _EXCERPT_CHARS * 4
        text = self.text[:window]
        t = self.tokens
        for i in range(len(t) - 1):
            if t.starts[i] >= window:
                break
            if t.word(i) == "PASSWORD" and t.kind(i + 1) == STRING:
                text = text[:t.starts[i + 1]] + b"'***'" + (b" \xe2\x80\xa6" if t.ends[i + 1] < len(self.text) else b"")
                break
        return excerpt(text)


@dataclass(frozen=True)
class CopyData:
    data: bytes


@dataclass(frozen=True)
class CopyEnd:
    line: int                   # the line of the `\.` that ended the data


@dataclass(frozen=True)
class Connect:
    """`\\connect DBNAME`: the script switches database here (pg_dumpall, pg_dump --create)."""

    dbname: str
    line: int
    text: str


Segment = Union[Statement, CopyData, CopyEnd, Connect]


def excerpt(data: bytes | str, limit: int = _EXCERPT_CHARS) -> str:
    """A short printable rendering: control and format characters become '?', long text ends in '…'."""
    text = bytes(data[: limit * 4]).decode("utf-8", "replace") if not isinstance(data, str) else data
    shown = "".join("?" if unicodedata.category(c) in ("Cc", "Cf") else c for c in text[:limit])
    return shown + ("…" if len(text) > limit else "")


def read_segments(chunks: Iterable[bytes], **limits) -> Iterator[Segment]:
    """Given a script as byte chunks, yield its segments; raise ScriptRefused / ScriptIncomplete."""
    reader = ScriptReader(**limits)
    for chunk in chunks:
        yield from reader.feed(chunk)
    yield from reader.finish()


class ScriptReader:
    """Incremental tokenizer: `feed(chunk)` and `finish()` yield segments (exhaust each before the next call)."""

    def __init__(self, *, max_statement_bytes: int = MAX_STATEMENT_BYTES, max_tokens: int = MAX_TOKENS):
        self.max_statement_bytes = max_statement_bytes
        self.max_tokens = max_tokens
        self.buf = bytearray()
        self.pos = 0                  # scanning position in buf
        self.eof = False
        self.state = _CODE
        self.line = 1                 # line number at buf[line_pos]
        self.line_pos = 0
        self.clean_line = True        # only whitespace since the last newline (meta lines must stand alone)
        self.literal_line = 0         # where the literal or comment being scanned began
        self.dollar_tag = b""
        self.comment_depth = 0
        self.copy_line_start = True   # COPY data: buf[pos] is at the start of a data line
        self._new_statement()

    # --- public ------------------------------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> Iterator[Segment]:
        self.buf += chunk
        yield from self._scan()
        self._compact()

    def finish(self) -> Iterator[Segment]:
        self.eof = True
        yield from self._scan()
        if self.state in (_COPY_DATA, _AFTER_COPY):
            raise ScriptIncomplete(self._line_at(self.pos), "the script ends inside COPY data (no \\. line)")
        if self.state in (_SQUOTE, _ESTRING):
            raise ScriptIncomplete(self.literal_line, "the script ends inside a quoted string begun here")
        if self.state == _DQUOTE:
            raise ScriptIncomplete(self.literal_line, "the script ends inside a quoted identifier begun here")
        if self.state == _DOLLAR_QUOTE:
            raise ScriptIncomplete(self.literal_line, "the script ends inside a dollar-quoted string begun here")
        if self.state == _BLOCK_COMMENT:
            raise ScriptIncomplete(self.literal_line, "the script ends inside a /* comment begun here")
        if self.stmt_start is not None:
            raise ScriptIncomplete(self.stmt_line, "the script ends inside a statement begun here (no ';')")

    # --- bookkeeping -------------------------------------------------------------------------------------------

    def _new_statement(self) -> None:
        self.stmt_start: int | None = None
        self.stmt_line = 0
        self.kinds = bytearray()
        self.starts = array("Q")
        self.ends = array("Q")
        self.paren_depth = 0
        self.begin_depth = 0
        self.identifier_count = 0
        self.function_words = [b"", b"", b"", b""]
        self.in_function = False

    def _line_at(self, pos: int) -> int:
        """The 1-based line of buf[pos]; positions asked for never go backwards past line_pos."""
        if pos >= self.line_pos:
            self.line += self.buf.count(b"\n", self.line_pos, pos)
        else:
            self.line -= self.buf.count(b"\n", pos, self.line_pos)
        self.line_pos = pos
        return self.line

    def _compact(self) -> None:
        """Drop what is scanned and not part of a pending statement; refuse a statement beyond the size cap."""
        keep = self.pos if self.stmt_start is None else self.stmt_start
        if keep:
            if self.line_pos < keep:
                self._line_at(keep)
            del self.buf[:keep]
            self.pos -= keep
            self.line_pos -= keep
            if self.stmt_start is not None:
                self.stmt_start = 0
        if len(self.buf) > self.max_statement_bytes:
            line = self.stmt_line if self.stmt_start is not None else self._line_at(0)
            raise ScriptRefused(line, f"statement or token longer than {_size(self.max_statement_bytes)} (restore_test "
                                      f"does not hold more in memory)", excerpt(bytes(self.buf[:_EXCERPT_CHARS * 2])))

    def _token(self, kind: int, start: int, end: int) -> None:
        if self.stmt_start is None:
            self.stmt_start = start
            self.stmt_line = self._line_at(start)
        if len(self.kinds) >= self.max_tokens:
            raise ScriptRefused(self.stmt_line, f"statement with more than {self.max_tokens} tokens",
                                excerpt(bytes(self.buf[self.stmt_start:self.stmt_start + _EXCERPT_CHARS * 2])))
        self.kinds.append(kind)
        self.starts.append(start - self.stmt_start)
        self.ends.append(end - self.stmt_start)
        self.clean_line = False

    def _statement(self, end: int) -> Statement:
        start = self.stmt_start
        text = bytes(self.buf[start:end])
        tokens = Tokens(text, self.kinds, self.starts, self.ends)
        copy_in = tokens.word(0) == "COPY" and any(tokens.word(i) == "STDIN" for i in range(len(tokens)))
        statement = Statement(text, self.stmt_line, tokens, copy_in)
        self._new_statement()
        return statement

    # --- the scanner: each step returns None (needs more data) or the segments it completed ---------------------

    def _scan(self) -> Iterator[Segment]:
        step = {_CODE: self._code, _SQUOTE: self._squote, _ESTRING: self._estring, _DQUOTE: self._dquote,
                _DOLLAR_QUOTE: self._dollar_quote, _BLOCK_COMMENT: self._block_comment,
                _LINE_COMMENT: self._line_comment, _COPY_DATA: self._copy_data, _AFTER_COPY: self._after_copy}
        while self.pos < len(self.buf):
            done = step[self.state]()
            if done is None:
                return
            yield from done

    def _more(self, end: int) -> bool:
        """A token reaching the end of the buffer may continue in the next chunk (unless at EOF)."""
        return end >= len(self.buf) and not self.eof

    def _code(self):
        """Whitespace and the common tokens in a loop; everything else through `_code_special`."""
        buf, pos, n = self.buf, self.pos, len(self.buf)
        match = _FAST.match
        while pos < n:
            m = match(buf, pos)
            if m is None:
                break
            group, end = m.lastindex, m.end()
            if group == 1:
                if buf.find(b"\n", pos, end) >= 0:
                    self.clean_line = True
                pos = end
                continue
            if end >= n and not self.eof:
                break                                                   # it may go on in the next chunk
            self._token(_FAST_KINDS[group], pos, end)
            if group == 2:
                if self.identifier_count < 4 or self.in_function:
                    self._track_begin(bytes(buf[pos:end]).lower())
                else:
                    self.identifier_count += 1
            elif group == 6:
                if buf[pos] == 0x28:                                    # (
                    self.paren_depth += 1
                elif buf[pos] == 0x29 and self.paren_depth:             # )
                    self.paren_depth -= 1
            pos = end
        self.pos = pos
        return () if pos >= n else self._code_special()

    def _code_special(self):
        buf, pos = self.buf, self.pos
        c = buf[pos]
        if c in b" \t\n\r\f\v":
            end = _WS.match(buf, pos).end()
            if buf.find(b"\n", pos, end) >= 0:
                self.clean_line = True
            self.pos = end
            return ()
        if c == 0x3B:                                                   # ;
            self.pos = pos + 1
            if self.paren_depth or self.begin_depth:                    # inside ( … ) or BEGIN ATOMIC … END
                self._token(PUNCT, pos, pos + 1)
                return ()
            self.clean_line = False
            if self.stmt_start is None:
                return ()                                               # an empty statement
            statement = self._statement(pos)
            if statement.copy_in:
                self.state = _AFTER_COPY
            return (statement,)
        if c == 0x5C:                                                   # a backslash: a psql meta-command
            return self._meta(pos)
        if c == 0x27:                                                   # '
            return self._open(STRING, _SQUOTE, pos, pos + 1)
        if c == 0x22:                                                   # "
            return self._open(QUOTED_IDENT, _DQUOTE, pos, pos + 1)
        if c in b"-/":
            if self._more(pos + 1):
                return None                                             # could be the start of a comment
            if buf[pos:pos + 2] == b"--":
                self.state = _LINE_COMMENT
                self.pos = pos + 2
                return ()
            if buf[pos:pos + 2] == b"/*":
                self.comment_depth = 1
                self.literal_line = self._line_at(pos)
                self.state = _BLOCK_COMMENT
                self.pos = pos + 2
                return ()
        if c == 0x24:                                                   # $
            return self._dollar(pos)
        for kind, pattern in ((WORD, _WORD), (NUMBER, _NUMBER), (OPERATOR, _OPERATOR)):
            m = pattern.match(buf, pos)
            if m:
                if self._more(m.end()):
                    return None
                if kind == WORD:
                    return self._word(pos, m.end())
                self._token(kind, pos, m.end())
                self.pos = m.end()
                return ()
        self._token(PUNCT, pos, pos + 1)
        if c == 0x28:                                                   # (
            self.paren_depth += 1
        elif c == 0x29 and self.paren_depth:                            # )
            self.paren_depth -= 1
        self.pos = pos + 1
        return ()

    def _open(self, kind: int, state: int, start: int, body: int):
        """Start a literal token at `start` whose text begins at `body`."""
        self._token(kind, start, body)
        self.literal_line = self._line_at(start)
        self.state = state
        self.pos = body
        return ()

    def _word(self, start: int, end: int):
        buf = self.buf
        text = bytes(buf[start:end])
        upper = text.upper()
        if buf[end:end + 1] == b"'":
            if upper == b"E":                                           # E'…': backslash escapes
                return self._open(STRING, _ESTRING, start, end + 1)
            if upper in (b"B", b"X", b"N"):                             # bit, hex and national strings
                return self._open(STRING, _SQUOTE, start, end + 1)
        if upper == b"U" and buf[end:end + 1] == b"&":
            if self._more(end + 1):
                return None
            if buf[end + 1:end + 2] == b"'":                            # U&'…' lexes like a standard string
                return self._open(STRING, _SQUOTE, start, end + 2)
            if buf[end + 1:end + 2] == b'"':
                return self._open(QUOTED_IDENT, _DQUOTE, start, end + 2)
        self._token(WORD, start, end)
        self.pos = end
        self._track_begin(text.lower())
        return ()

    def _track_begin(self, word: bytes) -> None:
        """psql's rule for CREATE [OR REPLACE] FUNCTION|PROCEDURE … BEGIN ATOMIC … END: `;` inside is not an end."""
        count = self.identifier_count
        self.identifier_count = count + 1
        if count < 4:
            if word in _FUNCTION_WORDS:
                self.function_words[count] = _FUNCTION_WORDS[word]
            w = self.function_words
            self.in_function = w[0] == b"c" and (w[1] in (b"f", b"p") or (w[1] == b"o" and w[2] == b"r"
                                                                         and w[3] in (b"f", b"p")))
        if not self.in_function or self.paren_depth:
            return
        if word == b"begin":
            self.begin_depth += 1
        elif word == b"case" and self.begin_depth:
            self.begin_depth += 1
        elif word == b"end" and self.begin_depth:
            self.begin_depth -= 1

    def _dollar(self, pos: int):
        buf = self.buf
        m = _DOLLAR.match(buf, pos)
        if m is None:
            if not self.eof and _DOLLAR_PREFIX.match(buf, pos):
                return None                                             # $tag cut by the chunk boundary
            self._token(OPERATOR, pos, pos + 1)                         # a lone $: the server will say what it thinks
            self.pos = pos + 1
            return ()
        if not m.group(0).endswith(b"$"):                               # $1: a parameter
            if self._more(m.end()):
                return None
            self._token(PARAM, pos, m.end())
            self.pos = m.end()
            return ()
        self.dollar_tag = bytes(m.group(0))
        return self._open(DOLLAR_STRING, _DOLLAR_QUOTE, pos, m.end())

    def _close_literal(self, end: int):
        self.ends[-1] = end - self.stmt_start
        self.state = _CODE
        self.pos = end
        return ()

    def _squote(self):
        return self._quoted(0x27)

    def _dquote(self):
        return self._quoted(0x22)

    def _quoted(self, quote: int):
        """'…' and "…": a doubled quote is part of the text; one followed by anything else ends it."""
        buf, pos = self.buf, self.pos
        while True:
            found = buf.find(quote, pos)
            if found < 0:
                self.pos = len(buf)
                return None
            if found + 1 >= len(buf) and not self.eof:
                self.pos = found
                return None
            if buf[found + 1:found + 2] == bytes((quote,)):
                pos = found + 2
                continue
            return self._close_literal(found + 1)

    def _estring(self):
        """E'…': a backslash escapes the next byte; '' is a quote too."""
        buf, pos = self.buf, self.pos
        while True:
            m = _E_STRING_END.search(buf, pos)
            if m is None:
                self.pos = len(buf)
                return None
            found = m.start()
            if found + 1 >= len(buf) and not self.eof:
                self.pos = found
                return None
            if buf[found] == 0x5C or buf[found + 1:found + 2] == b"'":
                pos = found + 2
                continue
            return self._close_literal(found + 1)

    def _dollar_quote(self):
        buf, tag = self.buf, self.dollar_tag
        found = buf.find(tag, self.pos)
        if found < 0:
            self.pos = max(self.pos, len(buf) - len(tag) + 1)         # the tag may straddle the chunk boundary
            return None
        return self._close_literal(found + len(tag))

    def _block_comment(self):
        buf, pos = self.buf, self.pos
        while True:
            m = _COMMENT_MARK.search(buf, pos)
            if m is None:
                self.pos = max(pos, len(buf) - 1)                      # a trailing / or * may pair with the next chunk
                return None
            self.comment_depth += 1 if m.group(0) == b"/*" else -1
            pos = m.end()
            if not self.comment_depth:
                self.state = _CODE
                self.pos = pos
                self.clean_line = False
                return ()

    def _line_comment(self):
        m = _LINE_END.search(self.buf, self.pos)
        if m is None:
            self.pos = len(self.buf)
            return None
        self.state = _CODE
        self.pos = m.start()
        self.clean_line = False
        return ()

    # --- psql meta-commands ------------------------------------------------------------------------------------

    def _meta(self, pos: int):
        buf = self.buf
        end = buf.find(b"\n", pos)
        if end < 0:
            if not self.eof and len(buf) - pos < _MAX_META_BYTES:
                return None
            end = len(buf)
        line = self._line_at(pos)
        text = bytes(buf[pos:min(end, pos + _MAX_META_BYTES)])
        alone = self.clean_line and self.stmt_start is None
        if alone and _META_LINE.fullmatch(text):
            self.pos = end
            return ()
        if alone and _CONNECT.fullmatch(text):
            self.pos = end
            return (Connect(_connect_dbname(text, line), line, excerpt(text)),)
        where = "" if alone else " inside a statement" if self.stmt_start is not None else \
            " after other text on its line"
        raise ScriptRefused(line, f"psql meta-command{where} (a dump is data: restore_test never runs psql commands)",
                            excerpt(text))

    # --- COPY … FROM stdin data ----------------------------------------------------------------------------------

    def _after_copy(self):
        """The rest of the COPY statement's line must be blank: its data starts on the next line."""
        buf = self.buf
        m = _BLANK.match(buf, self.pos)
        end = m.end()
        if buf[end:end + 1] == b"\n":
            self.pos = end + 1
            self.state = _COPY_DATA
            self.copy_line_start = True
            return ()
        if end < len(buf):
            raise ScriptRefused(self._line_at(end), "text after COPY … FROM stdin; on its line (the data must start "
                                                    "on the next line)", excerpt(bytes(buf[end:end + 80])))
        self.pos = end
        return None

    def _copy_data(self):
        """Pass data through up to the `\\.` line, keeping back at most the bytes that may begin one."""
        buf, pos = self.buf, self.pos
        for line_start in self._copy_candidates(pos):
            after = bytes(buf[line_start:line_start + 4])
            ending = next((t for t in _COPY_TERMINATORS if after.startswith(t)), None)
            if ending is None and self.eof and after in (b"\\.", b"\\.\r"):
                ending = after                                          # \. on the script's last line
            if ending is not None:
                return self._copy_end(line_start, line_start + len(ending))
            if line_start + len(after) == len(buf) and any(t.startswith(after) for t in _COPY_TERMINATORS):
                return self._copy_flush(line_start, line_start=True)   # "\\." or "\\.\r" cut by the chunk boundary
        if self.eof:
            return self._copy_flush(len(buf), line_start=False)
        last = buf.rfind(b"\n", pos)
        if last < 0 and not self.copy_line_start:
            return self._copy_flush(len(buf), line_start=False)
        tail_start = pos if last < 0 else last + 1
        if bytes(buf[tail_start:]) in (b"", b"\\"):                      # a data line may begin with the \\.
            return self._copy_flush(tail_start, line_start=True)
        return self._copy_flush(len(buf), line_start=False)

    def _copy_candidates(self, pos: int) -> Iterator[int]:
        """Line starts at or after `pos` whose line begins with a backslash and a dot."""
        buf = self.buf
        if self.copy_line_start and buf.startswith(b"\\.", pos):
            yield pos
        search = pos
        while (found := buf.find(b"\n\\.", search)) >= 0:
            yield found + 1
            search = found + 1

    def _copy_flush(self, upto: int, line_start: bool):
        start = self.pos
        if upto == start:
            return None
        self.pos = upto
        self.copy_line_start = line_start
        return (CopyData(bytes(self.buf[start:upto])),)

    def _copy_end(self, terminator: int, end: int):
        start = self.pos
        line = self._line_at(terminator)
        self.state = _CODE
        self.pos = end
        self.clean_line = True
        data = (CopyData(bytes(self.buf[start:terminator])),) if terminator > start else ()
        return data + (CopyEnd(line),)


def _size(count: int) -> str:
    return f"{count // 2**20} MiB" if count >= 2**20 else f"{count} bytes"


def _connect_dbname(text: bytes, line: int) -> str:
    """`\\connect name`, `\\c "Name"` or pg_dump's `\\connect -reuse-previous=on "dbname='name'"`: the name only."""
    rest = _CONNECT.fullmatch(text).group(1)
    args = [(m.group(1).replace(b'""', b'"') if m.group(1) is not None else m.group(2))
            for m in _CONNECT_ARG.finditer(rest)]
    if b"".join(m.group(0) for m in _CONNECT_ARG.finditer(rest)) != rest:
        raise ScriptRefused(line, "\\connect with arguments restore_test cannot read", excerpt(text))
    if args and args[0].startswith(b"-reuse-previous="):
        args = args[1:]
    if len(args) != 1:
        raise ScriptRefused(line, "\\connect to another user, host or port", excerpt(text))
    name = args[0].decode("utf-8", "replace")
    if "=" in name:
        m = _CONNINFO_DBNAME.fullmatch(name.strip())
        if m is None:
            raise ScriptRefused(line, "\\connect with connection options other than dbname", excerpt(text))
        name = re.sub(r"\\(.)", r"\1", m.group(1)) if m.group(1) is not None else m.group(2)
    return name
