"""Run directories of scratch-cluster restores: their removal (the scratch server stopped first), what a killed
agent left, and the host's restore lock.

A run directory `<scratch_dir>/maint-restore-<UTC time>-<random>` holds a scratch server's data directory,
socket directory and log (`checks.scratch_cluster`). It is removed after every run, and at the agent's
next start when the agent was killed. Its server is stopped first, by the pid in its `postmaster.pid`, and
only when that process is a `postgres` of the expected user whose working directory is that data
directory: the file is written by the server's user, so any other pid it names is left alone. Only a
directory whose name has the run-directory pattern, reached without a symlink, is ever deleted.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

RUN_PREFIX = "maint-restore-"
RUN_RE = re.compile(r"maint-restore-\d{8}t\d{6}-[0-9a-f]{8}")
LOCK_NAME = "restore_cluster.lock"
KILL_WAIT_SECONDS = 10.0           # a stray postmaster: SIGQUIT, then SIGKILL after this


@dataclass(frozen=True)
class Removal:
    """How removing one run directory went."""

    path: str
    removed: bool
    postmaster: str            # "not running", "killed (pid N)", "left alone: …"
    error: str | None = None

    def evidence(self) -> dict:
        return {"dir": self.path, "removed": self.removed, "postmaster": self.postmaster, "error": self.error}


def _process_state(pid: int) -> str | None:
    """The state letter of /proc/PID/stat (Z: a zombie), None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0].decode()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _alive(pid: int) -> bool:
    return _process_state(pid) not in (None, "Z", "X")


def _server_of(data: Path, uid: int) -> tuple[int | None, str]:
    """The postmaster of `data` from its postmaster.pid, when it is ours: a running `postgres` of user `uid` whose
    working directory is `data`. Return (pid, "") or (None, why not)."""
    try:
        fd = os.open(data / "postmaster.pid", os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None, "not running"
    except OSError as exc:
        return None, f"postmaster.pid unreadable: {exc.strerror}"
    try:
        first = os.read(fd, 4096).split(b"\n", 1)[0].strip()
    finally:
        os.close(fd)
    if not first.isdigit() or int(first) <= 1:
        return None, "postmaster.pid holds no pid"
    pid = int(first)
    if not _alive(pid):
        return None, "not running"
    try:
        with open(f"/proc/{pid}/status") as fh:
            owner = next(int(line.split()[1]) for line in fh if line.startswith("Uid:"))
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except (OSError, StopIteration) as exc:
        return None, f"left alone: pid {pid} cannot be inspected ({getattr(exc, 'strerror', None) or exc})"
    if owner != uid or not exe.startswith("postgres") or cwd != os.path.realpath(data):
        return None, f"left alone: pid {pid} from postmaster.pid is not the scratch server ({exe}, uid {owner})"
    return pid, ""


def _stop_stray(pid: int) -> bool:
    """SIGQUIT (immediate shutdown: the postmaster ends its backends), SIGKILL when it lingers; True when gone."""
    for sig in (signal.SIGQUIT, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        until = time.monotonic() + KILL_WAIT_SECONDS
        while time.monotonic() < until:
            if not _alive(pid):
                return True
            time.sleep(0.05)
    return not _alive(pid)


_REMOVING = threading.Lock()
_ACTIVE: dict[str, int] = {}        # run directories in use by this process → the server's uid (for atexit)


def remove_run_dir(path: Path, uid: int) -> Removal:
    """Stop the scratch server of run directory `path` if it is still running, then delete the directory.

    Only a directory named like a run directory, reached without a symlink, is ever deleted.
    """
    with _REMOVING:
        _ACTIVE.pop(str(path), None)
        if not RUN_RE.fullmatch(path.name):
            return Removal(str(path), False, "not looked at", "not a restore run directory name")
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return Removal(str(path), True, "not running")
        if not stat.S_ISDIR(st.st_mode):
            return Removal(str(path), False, "not looked at", "not a directory (a symlink?)")
        pid, why = _server_of(path / "data", uid)
        postmaster = why
        if pid is not None:
            postmaster = f"killed (pid {pid})" if _stop_stray(pid) else f"still running (pid {pid})"
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            return Removal(str(path), False, postmaster, f"{exc.strerror}: {exc.filename}")
        return Removal(str(path), not os.path.lexists(path), postmaster)


def _remove_active_at_exit() -> None:
    """The agent is exiting while a restore's worker may just have been ended: remove what it left."""
    for path, uid in list(_ACTIVE.items()):
        remove_run_dir(Path(path), uid)


_AT_EXIT = threading.Lock()
_registered = False


def track(path: Path, uid: int) -> None:
    """Remember a run directory in use, for removal at exit if the run cannot remove it itself."""
    global _registered
    with _AT_EXIT:
        if not _registered:
            atexit.register(_remove_active_at_exit)
            _registered = True
    with _REMOVING:
        _ACTIVE[str(path)] = uid


def leftover_dirs(scratch_dir: str, recorded: str | None) -> list[Path]:
    """Run directories left by a killed agent: the one the lock file recorded and any `maint-restore-*` in
    `scratch_dir` (call only while holding the host lock: then no restore is using them)."""
    found = []
    if recorded and RUN_RE.fullmatch(os.path.basename(recorded)):
        found.append(Path(recorded))
    try:
        with os.scandir(scratch_dir) as entries:
            found += [Path(e.path) for e in entries if RUN_RE.fullmatch(e.name) and e.is_dir(follow_symlinks=False)]
    except OSError:
        pass
    return sorted(set(found))


class HostLock:
    """An exclusive flock on one file per agent state directory, holding the run directory in use as JSON."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None
        self.holder: dict = {}          # what the lock recorded when it could not be taken

    def acquire(self, deadline: float | None, monotonic=time.monotonic, on_wait=None) -> bool:
        """Take the lock, waiting until `deadline` (None: do not wait); return False when it stayed taken."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)     # `check NAME` before any daemon ran
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        waited = False
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
            if deadline is None or monotonic() >= deadline:
                self.holder = self.recorded()
                self.release()
                return False
            if not waited and on_wait is not None:
                on_wait(self.recorded())
                waited = True
            time.sleep(min(1.0, max(0.05, deadline - monotonic())))

    def recorded(self) -> dict:
        try:
            os.lseek(self.fd, 0, os.SEEK_SET)
            return json.loads(os.read(self.fd, 65536) or b"{}")
        except (OSError, ValueError):
            return {}

    def record(self, entry: dict | None) -> None:
        os.ftruncate(self.fd, 0)
        if entry:
            os.pwrite(self.fd, json.dumps(entry).encode(), 0)
            os.fsync(self.fd)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)       # closing drops the flock
            self.fd = None
