"""`cleanup_files`: delete or gzip old files matching globs, only under configured roots (e.g. at disk > 90 %).

Safety (seed 003, data first): a root's path must hold no symlink when the
config is loaded (`realpath(root) == root`), and at run time the root is
opened from `/` one component at a time with O_NOFOLLOW, so a symlink put into
its path later is refused, not followed. The walk then opens every directory
relative to its parent's descriptor the same way, so it never follows a
symbolic link anywhere — a symlink is skipped (never removed; one pointing
outside its root is reported), a root is never removed, nor is any directory.
It never enters a mount point below a root: another filesystem (`st_dev`) nor
a bind mount of the same one (its mount ID differs from the root's, see
actions/mounts.py). Just before removing a file the directory chain is opened
again the same way, the directory's real path must still be under the root's,
and the file must still be the regular file that was chosen (same device,
inode and change time, still old); the unlink then goes through that directory
descriptor (`unlinkat`), so a directory swapped for a symlink in between cannot
redirect it. No argv is run:
a file named `-rf` is a file like any other. Files go oldest first until
`max_files` or `max_bytes` would be passed; `keep_newest` keeps the newest
matching files of each directory however old (the last backups).
"""

from __future__ import annotations

import fnmatch
import gzip
import os
import stat
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from actions.base import Action, ActionContext, ActionOptions, ActionResult
from actions.mounts import mount_id
from agent.plugin.fields import AbsolutePath, LongDuration, Size
from agent.plugin.units import format_duration, format_size

_SYSTEM_DIRS = ("/", "/bin", "/boot", "/dev", "/etc", "/home", "/opt", "/proc", "/root", "/run", "/sbin", "/srv",
                "/sys", "/usr", "/var")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_DEPTH = 64               # directory levels below a root
LISTED_CAP = 100            # paths listed per category in the result details
COPY_CHUNK_BYTES = 1 << 20


def check_root(root: str) -> str:
    """Given a configured root, return it normalised; raise ValueError for `/`, a top-level system
    directory or a path with `..` (a subdirectory such as /var/log/app is fine)."""
    if ".." in PurePosixPath(root).parts:
        raise ValueError(f"root {root!r} must not contain '..'")
    path = "/" + os.path.normpath(root).lstrip("/")   # normpath keeps a leading `//` (POSIX): `//etc` is /etc
    top = "/" + path.strip("/").split("/", 1)[0] if path != "/" else "/"
    if path in _SYSTEM_DIRS or (path == top and top.startswith("/lib")):
        raise ValueError(f"root {path!r} is / or a top-level system directory; name the subdirectory to clean "
                         f"(e.g. /var/log/app, /var/backups/pg)")
    _refuse_symlinks(path)
    return path


def _refuse_symlinks(path: str) -> None:
    """Raise ValueError naming the first component of `path` that is a symlink: a root is named by its real
    path, so what the operator reads in the config is what gets cleaned (a link can be re-pointed later)."""
    real = os.path.realpath(path)
    if real == path:
        return
    here = ""
    for part in path.strip("/").split("/"):
        here += "/" + part
        if os.path.islink(here):
            try:
                target = f" (→ {os.readlink(here)})"
            except OSError:
                target = ""
            where = "is a symlink" if here == path else f"goes through the symlink {here}"
            raise ValueError(f"root {path!r} {where}{target}; name the real directory ({real}): no symlink in "
                             f"a root's path is ever followed")
    raise ValueError(f"root {path!r} resolves to {real}; name the real directory")


Root = Annotated[AbsolutePath, AfterValidator(check_root)]
"""Checked per entry, so an error points at the offending line of `roots:`."""


@dataclass(frozen=True)
class Candidate:
    """A regular file that matched: where it is (directories below the root), what it was when seen."""

    root: str
    parts: tuple[str, ...]
    name: str
    size: int
    mtime: float
    identity: tuple[int, int, int]   # (st_dev, st_ino, st_ctime_ns): any change to the file moves ctime

    @property
    def path(self) -> str:
        return os.path.join(self.root, *self.parts, self.name)


@dataclass
class Walk:
    """What a walk of the roots found, besides the candidates."""

    candidates: list[Candidate] = field(default_factory=list)
    kept_newest: int = 0
    symlinks_skipped: int = 0
    symlinks_outside: list[str] = field(default_factory=list)
    mount_points: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    root_errors: list[str] = field(default_factory=list)
    out_of_time: bool = False


class CleanupFilesAction(Action):
    """Delete (or gzip) files older than `older_than` whose names match `patterns`, only under `roots`."""

    TYPE = "cleanup_files"
    EXAMPLE = """
        - name: clean-old-files
          type: cleanup_files
          roots: [/backups/database, /var/log/app]
          patterns: ["*.sql.gz", "*.log.*"]
          older_than: 30d
          keep_newest: 7          # the last 7 dumps stay whatever their age
          max_bytes: 50GiB
          cooldown: 1h
    """

    class Options(ActionOptions):
        type: Literal["cleanup_files"]
        roots: tuple[Root, ...] = Field(description="directories to clean, e.g. "
                                                "[/var/backups/pg, /var/log/beauth]; never / or a top-level "
                                                "system directory; each by its real path (no symlink in it); "
                                                "mount points below a root are never entered")
        patterns: tuple[str, ...] = Field(min_length=1, description="globs matched against the file name, "
                                                                    "e.g. ['*.log.*', '*.dump']")
        older_than: LongDuration = Field(description="only files last modified longer ago than this, e.g. 14d")
        mode: Literal["delete", "compress"] = Field("delete", description="compress: gzip to NAME.gz in place, "
                                                    "then remove the original (files already .gz are left)")
        max_files: int = Field(1000, ge=1, description="at most this many files per run (oldest first)")
        max_bytes: Size | None = Field(None, description="at most this many bytes of files per run; default: "
                                                         "no limit")
        recursive: bool = Field(True, description="also look in subdirectories (never through symlinks)")
        keep_newest: int = Field(0, ge=0, description="in each directory keep this many newest matching files "
                                                      "however old (the last backups)")

        @field_validator("roots")
        @classmethod
        def _roots(cls, roots):
            if not roots:
                raise ValueError("name at least one root")
            for index, root in enumerate(roots):
                for other in roots[index + 1:]:
                    if os.path.commonpath([root, other]) in (root, other):
                        raise ValueError(f"roots {root!r} and {other!r} overlap; list each tree once")
            return roots

        @field_validator("patterns")
        @classmethod
        def _patterns(cls, patterns):
            for pattern in patterns:
                if not pattern or "/" in pattern:
                    raise ValueError(f"pattern {pattern!r} must be a non-empty file-name glob without '/'")
            return patterns

        @model_validator(mode="after")
        def _positive_age(self):
            if self.older_than <= 0:
                raise ValueError("older_than must be above 0 (files being written now must never go)")
            return self

    def target(self) -> str:
        return ",".join(self.options.roots)

    def execute(self, ctx: ActionContext) -> ActionResult:
        opts = self.options
        started = ctx.monotonic()
        cutoff = ctx.wall() - opts.older_than
        walk = Walk()
        for root in opts.roots:
            self._walk_root(root, cutoff, walk, ctx, started)
        chosen, limit = self._choose(walk.candidates)
        details = _walk_details(walk, limit)
        if ctx.dry_run:
            details["files"] = _listed([c.path for c in chosen])
            details["bytes"] = sum(c.size for c in chosen)
            verb = "would compress" if opts.mode == "compress" else "would remove"
            return ActionResult(not walk.root_errors, ctx.redact(
                f"{verb} {_count(chosen)} ({format_size(details['bytes'])}) under {self.target()}"
                + _notes(walk, limit, [])), details=details)
        done, freed, errors = [], 0, []
        for candidate in chosen:
            if ctx.remaining(started) <= 0:
                walk.out_of_time = True
                break
            try:
                freed += self._dispose(candidate, cutoff, ctx, started)
                done.append(candidate)
            except _Skip as skip:
                errors.append(f"{candidate.path}: {skip}")
        details.update(files=_listed([c.path for c in done]), bytes=freed, errors=_listed(errors))
        verb = "compressed" if opts.mode == "compress" else "removed"
        freed_text = f", freed {format_size(freed)}" if opts.mode == "compress" else f" ({format_size(freed)})"
        summary = f"{verb} {_count(done)}{freed_text} under {self.target()}" + _notes(walk, limit, errors)
        if walk.out_of_time:
            summary = f"stopped at the time limit ({format_duration(ctx.timeout)}): " + summary
        ok = not (walk.root_errors or errors or walk.out_of_time)
        return ActionResult(ok, ctx.redact(summary), details=details)

    # --- the walk --------------------------------------------------------------------------------------------

    def _walk_root(self, root: str, cutoff: float, walk: Walk, ctx: ActionContext, started: float) -> None:
        try:
            root_fd = _open_root(root)
        except _Skip as refused:
            walk.root_errors.append(f"{root}: {refused}")
            return
        try:
            mount = mount_id(root_fd)
            if mount is None:
                walk.root_errors.append(f"{root}: cannot tell its mount points apart (needs Linux 5.8 for statx "
                                        f"STATX_MNT_ID, or /proc mounted); not walked")
                return
            top = _Top(root, _real(root_fd) or root, mount)
            self._walk_dir(top, root_fd, (), cutoff, walk, ctx, started)
        finally:
            os.close(root_fd)

    def _walk_dir(self, top: _Top, fd: int, parts: tuple[str, ...], cutoff: float, walk: Walk,
                  ctx: ActionContext, started: float) -> None:
        """Depth first, holding one descriptor per level (never one per directory of a wide tree)."""
        root = top.path
        for name in self._scan_dir(top, fd, parts, cutoff, walk):
            path = os.path.join(root, *parts, name)
            if ctx.remaining(started) <= 0:
                walk.out_of_time = True
                return
            if len(parts) >= MAX_DEPTH:
                walk.unreadable.append(f"{path}: deeper than {MAX_DEPTH} levels")
                continue
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                walk.unreadable.append(f"{path}: {exc.strerror or exc}")
                continue
            try:
                if mount_id(child) != top.mount:       # a bind mount: same st_dev, another mount
                    walk.mount_points.append(f"{path}: skipped: mount point")
                    continue
                self._walk_dir(top, child, (*parts, name), cutoff, walk, ctx, started)
            finally:
                os.close(child)

    def _scan_dir(self, top: _Top, fd: int, parts: tuple[str, ...], cutoff: float, walk: Walk) -> list[str]:
        """Collect this directory's matching old files into `walk`; return its subdirectories' names."""
        root, real_root = top.path, top.real
        here = os.path.join(root, *parts)
        subdirs, matching = [], []
        try:
            entries = list(os.scandir(fd))
        except OSError as exc:
            walk.unreadable.append(f"{here}: {exc.strerror or exc}")
            return []
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue        # gone since the listing
            if stat.S_ISLNK(info.st_mode):
                walk.symlinks_skipped += 1
                if _points_outside(fd, entry.name, os.path.join(real_root, *parts), real_root):
                    walk.symlinks_outside.append(os.path.join(here, entry.name))
            elif stat.S_ISDIR(info.st_mode):
                if self.options.recursive and info.st_dev == os.fstat(fd).st_dev:
                    subdirs.append(entry.name)      # like find -xdev: never into a mount below the root
                elif self.options.recursive:
                    walk.mount_points.append(f"{os.path.join(here, entry.name)}: skipped: mount point "
                                             f"(another filesystem)")
            elif stat.S_ISREG(info.st_mode) and self._matches(entry.name):
                matching.append(Candidate(root, parts, entry.name, info.st_size, info.st_mtime,
                                          _identity(info)))
        matching.sort(key=lambda c: c.mtime, reverse=True)
        keep = self.options.keep_newest
        old = [c for c in matching[keep:] if c.mtime < cutoff]
        walk.kept_newest += sum(1 for c in matching[:keep] if c.mtime < cutoff)
        walk.candidates += old
        return subdirs

    def _matches(self, name: str) -> bool:
        if self.options.mode == "compress" and name.endswith(".gz"):
            return False
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.options.patterns)

    def _choose(self, candidates: list[Candidate]) -> tuple[list[Candidate], str | None]:
        """Oldest first, up to max_files and without passing max_bytes; return them and the limit that bound."""
        chosen, total = [], 0
        for candidate in sorted(candidates, key=lambda c: c.mtime):
            if len(chosen) >= self.options.max_files:
                return chosen, "max_files"
            if self.options.max_bytes is not None and total + candidate.size > self.options.max_bytes:
                return chosen, "max_bytes"
            chosen.append(candidate)
            total += candidate.size
        return chosen, None

    # --- removing one file -----------------------------------------------------------------------------------

    def _dispose(self, candidate: Candidate, cutoff: float, ctx: ActionContext, started: float) -> int:
        """Re-check the candidate and delete or compress it; return the bytes freed; raise _Skip with why not."""
        dir_fd = _open_chain(candidate)
        try:
            real_root = os.path.realpath(candidate.root)
            where = _real(dir_fd)
            if where is not None and os.path.commonpath([where, real_root]) != real_root:
                raise _Skip(f"its directory is now {where}, outside the root")
            try:
                info = os.stat(candidate.name, dir_fd=dir_fd, follow_symlinks=False)
            except OSError as exc:
                raise _Skip(exc.strerror or str(exc)) from None
            if not stat.S_ISREG(info.st_mode) or _identity(info) != candidate.identity:
                raise _Skip("replaced or changed since the walk; left alone")
            if info.st_mtime >= cutoff:
                raise _Skip("modified since the walk; left alone")
            if self.options.mode == "compress":
                return _compress(dir_fd, candidate, info, ctx, started)
            try:
                os.unlink(candidate.name, dir_fd=dir_fd)
            except OSError as exc:
                raise _Skip(exc.strerror or str(exc)) from None
            return info.st_size
        finally:
            os.close(dir_fd)


class _Skip(Exception):
    """A chosen file that was not removed, with the reason (for the details)."""


@dataclass(frozen=True)
class _Top:
    """A root being walked: its configured path, its real path and the mount every walked directory is on."""

    path: str
    real: str
    mount: int


def _identity(info: os.stat_result) -> tuple[int, int, int]:
    """Device, inode and change time: an inode number freed and reused by a new file still differs in ctime."""
    return info.st_dev, info.st_ino, info.st_ctime_ns


def _open_root(root: str) -> int:
    """Open `root` from `/` one component at a time, never through a symlink: one swapped into the root's path
    after the config was loaded is refused here. Return the descriptor; raise _Skip saying which part failed."""
    try:
        fd = os.open("/", _DIR_FLAGS)
    except OSError as exc:
        raise _Skip(f"/: {exc.strerror or exc}") from None
    here = ""
    for part in root.strip("/").split("/"):
        here += "/" + part
        try:
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            symlink = _is_symlink(fd, part)
            os.close(fd)
            reason = "is a symlink (never followed)" if symlink else (exc.strerror or str(exc))
            if here != root:        # an ancestor: say which one
                reason = f"{here} {reason}" if symlink else f"{here}: {reason}"
            raise _Skip(reason) from None
        os.close(fd)
        fd = child
    return fd


def _is_symlink(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _open_chain(candidate: Candidate) -> int:
    """Open the candidate's directory from `/` one component at a time, never through a symlink nor into a
    mount point below the root."""
    try:
        fd = _open_root(candidate.root)
    except _Skip as refused:
        raise _Skip(f"root: {refused}") from None
    root_mount = mount_id(fd)
    if root_mount is None:
        os.close(fd)
        raise _Skip("cannot tell mount points apart; left alone")
    for part in candidate.parts:
        try:
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            os.close(fd)
            raise _Skip(f"directory {part!r}: {exc.strerror or exc} (a symlink is never followed)") from None
        os.close(fd)
        fd = child
        if mount_id(fd) != root_mount:
            os.close(fd)
            raise _Skip(f"directory {part!r} is now a mount point; left alone")
    return fd


def _compress(dir_fd: int, candidate: Candidate, info: os.stat_result, ctx: ActionContext, started: float) -> int:
    """gzip the file to NAME.gz beside it (owner, mode and mtime kept), then unlink it; return bytes freed."""
    target = candidate.name + ".gz"
    try:
        src = os.open(candidate.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        raise _Skip(exc.strerror or str(exc)) from None
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      stat.S_IMODE(info.st_mode), dir_fd=dir_fd)
    except OSError as exc:
        os.close(src)
        reason = f"{target} already exists" if isinstance(exc, FileExistsError) else (exc.strerror or str(exc))
        raise _Skip(reason) from None
    try:
        with os.fdopen(src, "rb") as reader, os.fdopen(dst, "wb") as raw:
            with gzip.GzipFile(filename=candidate.name, mode="wb", fileobj=raw, mtime=int(info.st_mtime)) as out:
                while chunk := reader.read(COPY_CHUNK_BYTES):
                    if ctx.remaining(started) <= 0:
                        raise _Skip("time limit reached while compressing; original kept")
                    out.write(chunk)
            raw.flush()
            os.fsync(raw.fileno())
            _copy_owner_and_times(raw.fileno(), info)
            written = os.fstat(raw.fileno()).st_size
        os.unlink(candidate.name, dir_fd=dir_fd)
    except (OSError, _Skip) as exc:
        try:
            os.unlink(target, dir_fd=dir_fd)
        except OSError:
            pass
        raise exc if isinstance(exc, _Skip) else _Skip(exc.strerror or str(exc)) from None
    return max(0, info.st_size - written)


def _copy_owner_and_times(fd: int, info: os.stat_result) -> None:
    """The .gz belongs to whoever owned the original and keeps its age (a later run ages it the same way)."""
    try:
        os.fchown(fd, info.st_uid, info.st_gid)
    except PermissionError:
        pass        # not root: the agent's own file, readable as before
    os.utime(fd, ns=(info.st_atime_ns, info.st_mtime_ns))


def _real(fd: int) -> str | None:
    """The directory's current real path (through /proc), None when /proc is not mounted."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def _points_outside(dir_fd: int, name: str, real_dir: str, real_root: str) -> bool:
    """True when the symlink's target, read without following it, lies outside the root."""
    try:
        target = os.readlink(name, dir_fd=dir_fd)
    except OSError:
        return False
    resolved = os.path.realpath(os.path.join(real_dir, target))
    return os.path.commonpath([resolved, real_root]) != real_root


def _listed(items: list[str]) -> list[str]:
    shown = [_printable(item) for item in items[:LISTED_CAP]]
    return shown + ([f"… and {len(items) - LISTED_CAP} more"] if len(items) > LISTED_CAP else [])


def _printable(path: str) -> str:
    """File names are bytes: show undecodable ones with replacement characters, not as an encoding error."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _count(files: list) -> str:
    return f"{len(files)} file{'s' * (len(files) != 1)}"


def _walk_details(walk: Walk, limit: str | None) -> dict:
    return {"limit_reached": limit, "kept_newest": walk.kept_newest, "symlinks_skipped": walk.symlinks_skipped,
            "symlinks_outside_root": _listed(walk.symlinks_outside), "mount_points": _listed(walk.mount_points),
            "unreadable": _listed(walk.unreadable),
            "root_errors": walk.root_errors}


def _notes(walk: Walk, limit: str | None, errors: list[str]) -> str:
    notes = []
    if limit:
        notes.append(f"{limit} reached")
    if walk.root_errors:
        notes.append("cannot open root " + "; ".join(walk.root_errors))
    if errors:
        notes.append(f"{len(errors)} not removed ({errors[0]}{', …' if len(errors) > 1 else ''})")
    if walk.unreadable:
        notes.append(f"{len(walk.unreadable)} unreadable directories skipped")
    if walk.mount_points:
        notes.append(f"{len(walk.mount_points)} mount points skipped")
    if walk.symlinks_outside:
        notes.append(f"{len(walk.symlinks_outside)} symlinks pointing outside the root skipped")
    return "; " + "; ".join(notes) if notes else ""
