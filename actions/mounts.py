"""Which mount an open directory is on, so a walk stops at every mount point — a bind mount too.

`st_dev` tells filesystems apart, not mounts: a directory of the same
filesystem bind-mounted below a clean-up root has the root's `st_dev`, and a
walk comparing devices would clean it as if it were part of the root. The
kernel's mount ID does tell them apart. It is read for the open descriptor
itself (never for a path, which could be swapped between look and use):

1. `statx(fd, "", AT_EMPTY_PATH, STATX_MNT_ID)` — Linux 5.8, glibc 2.28. Python
   3.11 and 3.12 have no `os.statx`, so it is called through ctypes; the
   kernel sets STATX_MNT_ID in `stx_mask` only when it filled the field.
2. else the `mnt_id:` line of `/proc/self/fdinfo/FD` — Linux 3.15, the same ID
   as the first field of `/proc/self/mountinfo`, but for this very descriptor:
   no matching of mountinfo lines by device and path, which two binds of one
   device or a mount stacked on another would make ambiguous.

When neither answers (an old kernel without /proc) the caller gets None and
must refuse to walk, not fall back to `st_dev`.
"""

from __future__ import annotations

import ctypes
import functools
import struct

_AT_EMPTY_PATH = 0x1000
_STATX_MNT_ID = 0x1000
_STATX_BUFFER_BYTES = 256          # sizeof(struct statx), with its spare fields
_STX_MASK = struct.Struct("=I")    # at offset 0
_STX_MNT_ID = struct.Struct("=Q")  # at offset 144, after stx_dev_minor
_STX_MNT_ID_OFFSET = 144


def mount_id(fd: int) -> int | None:
    """Given an open descriptor, return the ID of the mount it is on; None when the kernel cannot say."""
    found = statx_mount_id(fd)
    return found if found is not None else fdinfo_mount_id(fd)


def statx_mount_id(fd: int) -> int | None:
    """The mount ID from statx(2); None when libc has no statx, the call is refused (seccomp) or the
    kernel predates STATX_MNT_ID."""
    statx = _libc_statx()
    if statx is None:
        return None
    buffer = ctypes.create_string_buffer(_STATX_BUFFER_BYTES)
    if statx(fd, b"", _AT_EMPTY_PATH, _STATX_MNT_ID, buffer) != 0:
        return None
    (mask,) = _STX_MASK.unpack_from(buffer, 0)
    if not mask & _STATX_MNT_ID:
        return None
    return _STX_MNT_ID.unpack_from(buffer, _STX_MNT_ID_OFFSET)[0]


def fdinfo_mount_id(fd: int) -> int | None:
    """The mount ID from /proc/self/fdinfo/FD; None when /proc is not mounted or has no such line."""
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as info:
            for line in info:
                if line.startswith(b"mnt_id:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


@functools.cache
def _libc_statx():
    """libc's statx wrapper with its signature declared, or None (musl before 1.2.5, old glibc)."""
    try:
        statx = ctypes.CDLL(None, use_errno=True).statx
    except AttributeError:
        return None
    statx.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p)
    statx.restype = ctypes.c_int
    return statx
