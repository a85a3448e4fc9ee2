"""Backups on disk, found and read back to their end: what `backup_files`, `backup_set` and `restore_test` share.

Every read of a backup is streamed in chunks (bounded memory whatever the file
size) and checks the run's deadline between chunks, so a huge file ends in
VerifyTimeout instead of a hung worker. gzip streams decompress to the
end-of-stream marker and CRC, pg_dump/pg_dumpall scripts must end with their
"dump complete" trailer, custom-format dumps pass `pg_restore --list` and
`pg_restore -f /dev/null` (through `checks.bounded_process`), tar archives list to
their end-of-archive marker, and a `<file>.sha256` sidecar is compared when present.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import tarfile
import zlib
from dataclasses import dataclass
from typing import Any

from agent.plugin.child_env import child_env
from agent.plugin.units import format_size, format_timestamp
from checks.bounded_process import run_bounded

CHUNK_BYTES = 1024 * 1024          # one read of a backup; memory stays at a few of these whatever the file size
EDGE_BYTES = 4096                 # head and tail of a dump kept to recognise pg_dump scripts and their trailer
SIDECAR_SUFFIX = ".sha256"
_PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"


class VerifyTimeout(Exception):
    """The run's deadline passed while a backup was being read."""

    def __init__(self, read_bytes: int):
        super().__init__(read_bytes)
        self.read_bytes = read_bytes


class Corrupt(Exception):
    """The backup cannot be read back; the message says how (for the operator)."""


class CannotVerify(Exception):
    """Verification could not run (unreadable file, missing pg_restore): the backup itself may be fine."""


# --- finding the backups -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BackupFile:
    path: str
    size: int
    mtime: float
    key: tuple        # identity for the verification cache: a rewritten file is verified again

    def evidence(self, now: float) -> dict:
        return {"path": self.path, "size_bytes": self.size, "mtime": format_timestamp(self.mtime, utc=False),
                "age_seconds": round(max(0.0, now - self.mtime), 3)}


def find_backups(pattern: str, now: float, settle: float,
                 dump_dirs: bool = False) -> tuple[list[BackupFile], list[BackupFile]]:
    """Given a glob, return (backups newest first, files still being written).

    Regular files only, and with `dump_dirs` also `pg_dump -Fd` directories
    (holding a toc.dat; their size and mtime are those of their files);
    `.sha256` sidecars are not backups. A backup modified less than `settle`
    seconds ago is taken as still being written (a running pg_dump keeps its
    mtime fresh) and left out, so the backup window never looks like a
    truncated dump.
    """
    found, writing = [], []
    for path in glob.glob(pattern, recursive=True):
        if path.endswith(SIDECAR_SUFFIX):
            continue
        try:
            st = os.stat(path)
            if os.path.isfile(path):
                entry = BackupFile(path, st.st_size, st.st_mtime, (st.st_ino, st.st_size, st.st_mtime_ns))
            elif dump_dirs and os.path.isfile(os.path.join(path, "toc.dat")):
                entry = _dump_dir(path, st)
            else:
                continue
        except FileNotFoundError:      # removed between the listing and the stat (clean-up running)
            continue
        (writing if now - entry.mtime < settle else found).append(entry)
    found.sort(key=lambda f: (f.mtime, f.path), reverse=True)
    return found, writing


def _dump_dir(path: str, st: os.stat_result) -> BackupFile:
    """A pg_dump directory as one backup: the total size and newest mtime of its files."""
    size, newest = 0, st.st_mtime_ns
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                info = entry.stat(follow_symlinks=False)
                size += info.st_size
                newest = max(newest, info.st_mtime_ns)
    return BackupFile(path, size, newest / 1e9, (st.st_ino, size, newest))


def _bytes(count: int) -> str:
    return f"{count} bytes" if count < 1024 else f"{format_size(count)} ({count} bytes)"


def find_program(name: str, bin_dir: str | None) -> str | None:
    """Given a client program name, return its path: in `bin_dir` when set, else PATH, else the newest
    /usr/lib/postgresql/<version>/bin; None when absent."""
    if bin_dir:
        path = os.path.join(bin_dir, name)
        return path if os.access(path, os.X_OK) else None
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(os.path.join(_PG_BIN_GLOB, name)),
                      key=lambda p: [int(x) if x.isdigit() else 0 for x in p.split("/")[4].split(".")],
                      reverse=True)
    return next((p for p in versions if os.access(p, os.X_OK)), None)


# --- reading a backup to its end -----------------------------------------------------------------------------

class RawReader:
    """File-like view of a backup that hashes what it reads and stops at the deadline."""

    def __init__(self, fh, deadline: float, monotonic):
        self.fh = fh
        self.deadline = deadline
        self.monotonic = monotonic
        self.sha = hashlib.sha256()
        self.read_bytes = 0

    def read(self, n: int = -1) -> bytes:
        if self.monotonic() >= self.deadline:
            raise VerifyTimeout(self.read_bytes)
        data = self.fh.read(CHUNK_BYTES if n is None or n < 0 else min(n, CHUNK_BYTES))
        self.sha.update(data)
        self.read_bytes += len(data)
        return data


class GunzipReader:
    """File-like decompressed view of a gzip stream (members concatenated), output bounded per call.

    Raise Corrupt when the data is not gzip, fails its CRC, or ends before the
    end-of-stream marker of the member it is in (a truncated file).
    """

    def __init__(self, raw: RawReader):
        self.raw = raw
        self.inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.pending = b""
        self.buffer = b""
        self.in_member = False
        self.raw_done = False
        self.done = False
        self.members = 0
        self.out_bytes = 0

    def read(self, n: int = -1) -> bytes:
        n = CHUNK_BYTES if n is None or n < 0 else n
        while not self.buffer and not self.done:
            self._fill()
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        self.out_bytes += len(out)
        return out

    def _fill(self) -> None:
        if self.pending:
            data, self.pending = self.pending, b""
        elif self.inflater.unconsumed_tail:
            data = self.inflater.unconsumed_tail
        elif not self.raw_done:
            data = self.raw.read(CHUNK_BYTES)
            if not data:
                self.raw_done = True
                return
        else:
            if self.in_member:
                self.buffer = self.inflater.flush()
                if not self.inflater.eof:
                    raise Corrupt(f"gzip stream truncated: the file ends after {_bytes(self.raw.read_bytes)} "
                                  f"without the end-of-stream marker")
                self.in_member = False
                return
            if not self.members:
                raise Corrupt("not a gzip stream (no data)")
            self.done = True
            return
        try:
            self.buffer = self.inflater.decompress(data, CHUNK_BYTES)
        except zlib.error as exc:
            if not self.in_member and "header check" in str(exc):
                where = "data after the gzip stream is not gzip" if self.members else "not a gzip stream"
                raise Corrupt(f"{where}: {exc}") from None
            raise Corrupt(f"gzip data corrupt: {exc} (within the first {self.raw.read_bytes} compressed bytes)") \
                from None
        self.in_member = True
        if self.inflater.eof:
            self.members += 1
            self.pending = self.inflater.unused_data
            self.inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            self.in_member = False


class Recorder:
    """Pass reads through, keeping the first and last EDGE_BYTES and the total."""

    def __init__(self, reader):
        self.reader = reader
        self.head = b""
        self.tail = b""
        self.total = 0

    def read(self, n: int = -1) -> bytes:
        data = self.reader.read(n)
        if len(self.head) < EDGE_BYTES:
            self.head += data[: EDGE_BYTES - len(self.head)]
        self.tail = (self.tail + data)[-EDGE_BYTES:]
        self.total += len(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK_BYTES):
            pass


def dump_script_problem(head: bytes, tail: bytes) -> str | None:
    """Given the start and end of an SQL text, return why a pg_dump/pg_dumpall script is incomplete, if it is.

    pg_dump writes `-- PostgreSQL database dump complete` as its last comment; a
    dump that died mid-way and was piped into gzip leaves a valid gzip file
    without it. Text not recognisable as pg_dump output is not judged.
    """
    for kind, marker in (("pg_dumpall", b"-- PostgreSQL database cluster dump"),
                         ("pg_dump", b"-- PostgreSQL database dump")):
        if marker in head:
            if marker + b" complete" in tail:
                return None
            return (f"{kind} script incomplete: no '{(marker + b' complete').decode()}' at its end "
                    f"(the dump stopped early)")
    return None


def detect_format(path: str, head: bytes) -> str:
    """Given a file's first bytes, return gzip, tar (also gzip-compressed tar), pg_custom or plain."""
    if head.startswith(b"PGDMP"):
        return "pg_custom"
    if head.startswith(b"\x1f\x8b"):
        return "tar" if path.endswith((".tar.gz", ".tgz")) else "gzip"
    if head[257:262] == b"ustar":
        return "tar"
    return "plain"


@dataclass
class Verification:
    """What reading one backup found; `evidence()` is what the store keeps."""

    file: BackupFile
    format: str
    ok: bool = True
    reason: str = "ok"
    seconds: float = 0.0
    read_bytes: int = 0
    content_bytes: int | None = None
    entries: int | None = None
    sha256: str | None = None
    checksum: str = "no sidecar"      # match, mismatch, no sidecar, missing (required), unreadable sidecar
    checksum_expected: str | None = None
    verified_at: float = 0.0
    cached: bool = False

    def fail(self, reason: str) -> None:
        if self.ok:
            self.ok, self.reason = False, reason

    def evidence(self, now: float) -> dict:
        out = {**self.file.evidence(now), "format": self.format, "integrity": self.reason, "verified": self.ok,
               "read_bytes": self.read_bytes, "seconds": round(self.seconds, 3), "sha256": self.sha256,
               "checksum": self.checksum, "verified_at": format_timestamp(self.verified_at, utc=False)}
        if self.checksum_expected and self.checksum == "mismatch":
            out["checksum_expected"] = self.checksum_expected
        if self.content_bytes is not None:
            out["content_bytes"] = self.content_bytes
        if self.entries is not None:
            out["entries"] = self.entries
        if self.cached:
            out["cached"] = True
        return out


def read_sidecar(path: str) -> tuple[str, str | None]:
    """Return (state, expected hex) for `<path>.sha256` in sha256sum format (or a bare hash)."""
    try:
        with open(path + SIDECAR_SUFFIX, "rb") as fh:
            text = fh.read(64 * 1024).decode("utf-8", "replace")
    except FileNotFoundError:
        return "no sidecar", None
    except OSError as exc:
        return f"unreadable sidecar: {exc.strerror}", None
    name = os.path.basename(path)
    candidates = []
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if parts and re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
            listed = parts[1].lstrip("*").strip() if len(parts) > 1 else ""
            candidates.append((listed, parts[0].lower()))
    match = next((h for listed, h in candidates if os.path.basename(listed) == name), None)
    if match is None and len(candidates) == 1:
        match = candidates[0][1]
    if match is None:
        return "unreadable sidecar: no SHA-256 for this file in it", None
    return "present", match


def sidecar_key(path: str) -> tuple:
    """The `<file>.sha256` sidecar's (inode, size, mtime), () without one: a new sidecar means reading again."""
    try:
        st = os.stat(path + SIDECAR_SUFFIX)
        return st.st_ino, st.st_size, st.st_mtime_ns
    except OSError:
        return ()


def verify_backup(f: BackupFile, fmt: str, *, deadline: float, monotonic, wall, bin_dir: str | None,
                  min_size: int | None, require_checksum: bool) -> Verification:
    """Given a backup, read it to its end as its format demands and compare its sidecar; return the findings.

    Raise VerifyTimeout at the deadline and CannotVerify when the file cannot
    be opened or pg_restore is missing.
    """
    started = monotonic()
    try:
        fh = open(f.path, "rb")
    except OSError as exc:
        raise CannotVerify(f"cannot read {f.path}: {exc.strerror}") from None
    with fh:
        head = fh.read(512)
        fh.seek(0)
        fmt = detect_format(f.path, head) if fmt == "auto" else fmt
        v = Verification(f, fmt, verified_at=wall())
        if f.size == 0:
            v.fail("empty file (0 bytes)")
        elif min_size is not None and f.size < min_size:
            v.fail(f"below min_size {format_size(min_size)}")
        raw = RawReader(fh, deadline, monotonic)
        if f.size:
            try:
                _read_format(v, raw, head, fmt, deadline, monotonic, bin_dir)
            except Corrupt as exc:
                v.fail(str(exc))
            except (tarfile.TarError, EOFError) as exc:
                v.fail(f"tar archive unreadable: {exc}")
            v.read_bytes = raw.read_bytes
            v.sha256 = raw.sha.hexdigest() if raw.read_bytes == f.size else None
    state, expected = read_sidecar(f.path)
    v.checksum_expected = expected
    if state == "present" and v.sha256:
        v.checksum = "match" if expected == v.sha256 else "mismatch"
        if v.checksum == "mismatch":
            v.fail(f"sha256 mismatch: file {v.sha256[:16]}…, {os.path.basename(f.path)}{SIDECAR_SUFFIX} "
                   f"{expected[:16]}…")
    elif state == "no sidecar":
        v.checksum = "missing (required)" if require_checksum else "no sidecar"
    elif state != "present":
        v.checksum = state
    v.seconds = monotonic() - started
    return v


def _read_format(v: Verification, raw: RawReader, head: bytes, fmt: str, deadline: float, monotonic,
                 bin_dir: str | None) -> None:
    if fmt == "pg_custom":
        drain_raw(raw)
        _pg_restore_reads(v, deadline, monotonic, bin_dir)
        return
    gzipped = fmt == "gzip" or (fmt == "tar" and head.startswith(b"\x1f\x8b"))
    source = GunzipReader(raw) if gzipped else raw
    rec = Recorder(source)
    if fmt == "tar":
        with tarfile.open(fileobj=rec, mode="r|") as archive:
            v.entries = sum(1 for _ in archive)
        rec.drain()
        if rec.tail[-1024:] != bytes(min(1024, len(rec.tail))) or rec.total < 1024:
            raise Corrupt("tar archive truncated: no end-of-archive marker")
    else:
        rec.drain()
        problem = dump_script_problem(rec.head, rec.tail)
        if problem:
            raise Corrupt(problem)
    if isinstance(source, GunzipReader):
        v.content_bytes = rec.total


def drain_raw(raw: RawReader) -> None:
    while raw.read(CHUNK_BYTES):
        pass


def _pg_restore_reads(v: Verification, deadline: float, monotonic, bin_dir: str | None) -> None:
    """`pg_restore --list` (the table of contents parses), then `pg_restore -f /dev/null` (every data block
    decompresses: --list alone reads only the header and would pass a dump corrupted further in)."""
    program = find_program("pg_restore", bin_dir)
    if program is None:
        raise CannotVerify("pg_restore not found (install postgresql-client or set pg_bin_dir)")
    for argv, what in (([program, "--list", v.file.path], "pg_restore --list"),
                       ([program, "--file=/dev/null", v.file.path], "pg_restore (reading every data block)")):
        try:
            done = run_bounded(argv, deadline=deadline, env=child_env(), monotonic=monotonic)
        except OSError as exc:
            raise CannotVerify(f"cannot run {program}: {exc.strerror}") from None
        if done.timed_out:
            raise VerifyTimeout(v.file.size)
        if done.returncode != 0:
            raise Corrupt(f"{what} failed: {done.reason()}")
        if v.entries is None:
            found = re.search(r"TOC Entries:\s*(\d+)", done.output)
            v.entries = int(found.group(1)) if found else None


# -- option and path helpers of the backup families ---------------------------------------------------


def default_keys(data: Any, **defaults: Any) -> Any:
    """Fill `defaults` into raw options only when none of their keys was given (warning/critical as a pair)."""
    if isinstance(data, dict) and not any(key in data for key in defaults):
        return {**data, **defaults}
    return data


def short_path(path: str, pattern: str) -> str:
    """The part of `path` below the glob's fixed directory: `20250105/full_backup.sql.gz`."""
    base = os.path.dirname(re.split(r"[*?\[]", pattern, maxsplit=1)[0])
    return os.path.relpath(path, base) if base else path
