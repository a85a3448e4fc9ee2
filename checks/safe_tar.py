"""A base backup's tar archives (`pg_basebackup -Ft -z`) read as data: sized first, then extracted safely.

A base backup is written by another job, and the restore test extracts it with
the agent's rights (root, when a `run_as` user runs the scratch cluster).
tarfile's `data_filter` already refuses links that leave the destination and
device files, and drops owners and set-id bits; on top of it every member must
be a regular file or a directory with a relative name and no `..` component —
data_filter would strip a leading `/` and extract `/etc/cron.d/x` inside the
destination, which is harmless but not what a base backup holds, so it is
refused instead. pg_basebackup's archives hold nothing else (tablespaces are
named in `tablespace_map`, not linked). Extraction also stops past a byte
budget, so a file swapped between the sizing pass and the extraction cannot
fill the scratch file system.

Both passes stream the archive (bounded memory whatever its size) and stop at
the deadline between members. Standard library only.
"""

from __future__ import annotations

import gzip
import tarfile
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Callable, Iterator

CAPTURED = ("PG_VERSION", "backup_label", "tablespace_map")   # small files whose content the restore needs
_CAPTURE_BYTES = 64 * 1024
_DRAIN_BYTES = 1024 * 1024


class ArchiveCorrupt(Exception):
    """The archive does not read to its end (truncated or damaged gzip, a broken tar header)."""


class ArchiveRefused(Exception):
    """A member a base backup never holds; the message names it."""


class Deadline(Exception):
    """The deadline passed while reading the archive."""


@dataclass
class Contents:
    """What the sizing pass found: members, the bytes they expand to, and the captured small files."""

    members: int = 0
    expanded_bytes: int = 0
    files: dict[str, bytes] = field(default_factory=dict)


def member_problem(member: tarfile.TarInfo) -> str | None:
    """Given a tar member, return why a base-backup restore refuses it, or None."""
    name = member.name
    if name.startswith("/"):
        return f"absolute path {name!r}"
    if ".." in PurePosixPath(name).parts:
        return f"'..' in {name!r}"
    if member.issym() or member.islnk():
        return f"link {name!r} -> {member.linkname!r}"
    if not (member.isfile() or member.isdir()):
        return f"{'device' if member.ischr() or member.isblk() else 'special file'} {name!r}"
    return None


def _normal(name: str) -> str:
    return str(PurePosixPath(name)).removeprefix("./")


@contextmanager
def _open(path: str) -> Iterator[tarfile.TarFile]:
    """The archive as a tar stream (no seeking, so a truncated file fails where it ends), gunzipped by `gzip`:
    pg_basebackup -z writes several gzip members (an empty one first), which tarfile's own `r|gz` stops at.
    The file is read to its very end when the tar stream is done: tar stops at its end-of-archive blocks, and
    gzip checks a member's CRC only at the member's end."""
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as fh:
        with tarfile.open(fileobj=fh, mode="r|") as archive:
            yield archive
        while fh.read(_DRAIN_BYTES):
            pass


def _admit(member: tarfile.TarInfo, deadline: float, monotonic: Callable[[], float]) -> None:
    """Raise Deadline past the deadline, ArchiveRefused for a member a base backup cannot hold; else return."""
    if monotonic() >= deadline:
        raise Deadline()
    problem = member_problem(member)
    if problem:
        raise ArchiveRefused(f"{problem}: a base backup holds only files and directories, named inside its "
                             f"data directory")


def scan(path: str, deadline: float, monotonic: Callable[[], float] = time.monotonic) -> Contents:
    """Given a (gzip-compressed) tar archive, read it to its end; return its member count, expanded size and the
    CAPTURED files. Raise ArchiveCorrupt, ArchiveRefused, Deadline, or FileNotFoundError/PermissionError."""
    found = Contents()
    last = None
    try:
        with _open(path) as archive:
            for member in archive:
                last = member.name
                _admit(member, deadline, monotonic)
                found.members += 1
                found.expanded_bytes += member.size if member.isfile() else 0
                name = _normal(member.name)
                if name in CAPTURED and member.isfile() and member.size <= _CAPTURE_BYTES:
                    found.files[name] = archive.extractfile(member).read()
    except (FileNotFoundError, PermissionError):
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise ArchiveCorrupt(_describe(exc, found.members, last)) from None
    return found


def extract(path: str, dest: str, *, deadline: float, max_bytes: int,
            monotonic: Callable[[], float] = time.monotonic) -> int:
    """Extract the archive at `path` into the existing directory `dest`; return the bytes written.

    Raise ArchiveRefused for a member `member_problem` names or one past `max_bytes` in total, ArchiveCorrupt
    when the archive ends early, Deadline at the deadline (what was extracted stays for the caller to remove).
    """
    written = 0

    def admit(member: tarfile.TarInfo, where: str) -> tarfile.TarInfo:
        nonlocal written
        _admit(member, deadline, monotonic)
        written += member.size if member.isfile() else 0
        if written > max_bytes:
            raise ArchiveRefused(f"the archive expands beyond the {max_bytes} bytes it held when it was sized "
                                 f"(rewritten since?)")
        return tarfile.data_filter(member, where)

    try:
        with _open(path) as archive:
            archive.extractall(dest, filter=admit)
    except (FileNotFoundError, PermissionError):
        raise
    except tarfile.FilterError as exc:
        raise ArchiveRefused(str(exc)) from None
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise ArchiveCorrupt(_describe(exc, None, None)) from None
    return written


def _describe(exc: Exception, members: int | None, last: str | None) -> str:
    where = f" at member {members} ({last!r})" if last is not None else ""
    if isinstance(exc, EOFError):
        return f"truncated: the archive ends{where} before its end-of-stream marker ({exc})"
    return f"unreadable{where}: {exc}"
