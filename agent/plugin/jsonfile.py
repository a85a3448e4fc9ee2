"""JSON state files a check keeps between runs (config_drift baselines, log_scan positions).

Written whole or not at all (`agent.plugin.outfile.replace_file`: a temporary file and a rename), private
(0600, directories 0700), and owned like their directory when root writes them, so
`sudo maint-agent config-drift accept` leaves files the daemon's user can still read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from agent.plugin.outfile import replace_file


def _make_dirs(directory: Path) -> None:
    """Create `directory` (0700) and missing parents. As root, each new directory gets the owner of the
    one above it, so `sudo maint-agent config-drift accept` leaves files the daemon's user can read."""
    if directory.is_dir():
        return
    _make_dirs(directory.parent)
    directory.mkdir(mode=0o700, exist_ok=True)
    if os.geteuid() == 0:
        st = directory.parent.stat()
        os.chown(directory, st.st_uid, st.st_gid)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write `data` as JSON to `path` (0600) through a temporary file and a rename, so a reader (or a crash)
    never sees half a file. Parent directories are created; as root, the file gets the directory's owner."""
    _make_dirs(path.parent)
    with replace_file(path) as fh:
        if os.geteuid() == 0:
            st = path.parent.stat()
            os.fchown(fh.fileno(), st.st_uid, st.st_gid)
        json.dump(data, fh, indent=1, sort_keys=True)


def read_json(path: Path) -> Any:
    """The JSON in `path`, None when the file does not exist; raise ValueError when it is unreadable."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
