"""Files the agent and its CLI write: created private, complete, and never through a planted link.

Every writer (`history export -o`, `fleet targets --output`, config_drift baselines, log_scan
state) goes through `replace_file`: the content goes to a new temporary file beside the
target (mkstemp: O_CREAT|O_EXCL, mode 0600 whatever the umask), is synced, then renamed
over the target. A rename replaces a name and never follows it, so a symlink an attacker
plants at the target's name cannot redirect the write; one already there is refused, so an
operator who pointed at a link learns it instead of finding the link replaced.
"""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, TextIO

PRIVATE = 0o600


@contextmanager
def replace_file(path: Path, mode: int = PRIVATE, newline: str | None = None) -> Iterator[TextIO]:
    """Given a target path, yield a text file to write; on a clean exit it replaces the target, with `mode`.

    Raise OSError (ELOOP) when the target is a symbolic link, or as creating, writing or renaming fails;
    then the target is untouched and no temporary file is left. The directory must exist.
    """
    path = Path(path)
    if path.is_symlink():
        raise OSError(errno.ELOOP, f"is a symbolic link (to {os.readlink(path)}); name the file itself "
                                   "(output never follows a link)", str(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as out:
            if mode != PRIVATE:
                os.fchmod(out.fileno(), mode)
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
