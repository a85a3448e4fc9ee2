"""Backup sets on disk: the timestamped directory a nightly job fills, taken as one backup.

Shared by `backup_set` (the set is complete and every member reads back) and `s3_backup`
with `set: true` (the same set is in the bucket, member by member), so both pick the same
directory and the same files.

A set is a directory matching a glob (`/backups/database/*`). Sets are ordered newest first
by name: the seed's job names them `date +%Y%m%d_%H%M%S`, which sorts in time order and,
unlike a directory's mtime, does not move when a file inside is touched or removed. Files
that are not directories (`last_backup_timestamp`) are not sets.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Member:
    """One regular file of a set; `relpath` is its path below the set directory."""

    path: str
    relpath: str
    size: int
    mtime: float
    mtime_ns: int
    inode: int

    @property
    def key(self) -> tuple:
        """Identity for verification caches: a rewritten file is read again."""
        return self.inode, self.size, self.mtime_ns


@dataclass(frozen=True)
class BackupSet:
    path: str
    members: tuple[Member, ...]      # every regular file below the directory, by relpath

    @property
    def name(self) -> str:
        return os.path.basename(self.path.rstrip("/"))

    @property
    def newest_mtime(self) -> float | None:
        return max((m.mtime for m in self.members), default=None)


def set_directories(pattern: str) -> list[str]:
    """Given an absolute glob, return the directories it matches, newest (greatest name) first."""
    found = [path for path in glob.glob(pattern) if os.path.isdir(path)]
    return sorted(found, key=lambda path: (os.path.basename(path.rstrip("/")), path), reverse=True)


def read_set(directory: str) -> BackupSet:
    """Given a set directory, return it with every regular file below it (symlinks not followed).

    A file removed between the listing and its stat (a clean-up running) is left out.
    Raise OSError when the directory itself cannot be listed.
    """
    members = []
    os.listdir(directory)                         # an unreadable set directory is an error, not an empty set
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in files:
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            members.append(Member(path, os.path.relpath(path, directory), st.st_size, st.st_mtime, st.st_mtime_ns,
                                  st.st_ino))
    return BackupSet(directory, tuple(sorted(members, key=lambda m: m.relpath)))


def expected_members(backup_set: BackupSet, patterns: tuple[str, ...]) -> dict[str, list[Member]]:
    """Given a set and member globs relative to it (`**` spans subdirectories), return each glob's files."""
    by_path = {m.path: m for m in backup_set.members}
    out = {}
    for pattern in patterns:
        matched = sorted(glob.glob(os.path.join(glob.escape(backup_set.path), pattern), recursive=True))
        out[pattern] = [by_path[path] for path in matched if path in by_path]
    return out
