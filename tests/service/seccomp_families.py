"""RestrictAddressFamilies= without systemd: the same seccomp rule, applied by hand, then exec a program.

systemd implements `RestrictAddressFamilies=A B C` as a seccomp filter on socket(2): any other family fails
with EAFNOSUPPORT. PID 1 is not systemd here, so `python seccomp_families.py "AF_UNIX AF_INET" -- PROG ARGS`
installs that filter (with no_new_privs, as NoNewPrivileges= does) and execs PROG under it; the filter
holds for PROG and every process it starts.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import socket
import struct
import sys

_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2
_RET_ALLOW, _RET_ERRNO = 0x7FFF0000, 0x00050000
_LD_ABS, _JEQ, _RET = 0x20, 0x15, 0x06          # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K
_ARCH = {"x86_64": (0xC000003E, 41), "aarch64": (0xC00000B7, 198)}   # AUDIT_ARCH_*, __NR_socket


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def supported() -> bool:
    return platform.machine() in _ARCH


def program(families: list[int]) -> bytes:
    """The BPF program: socket(family, …) with a family not listed returns EAFNOSUPPORT; all else passes."""
    arch, nr_socket = _ARCH[platform.machine()]
    checks = len(families)
    code = [(_LD_ABS, 0, 0, 4),                      # seccomp_data.arch
            (_JEQ, 0, 4 + checks, arch),             # another ABI: allow (not used by this test's programs)
            (_LD_ABS, 0, 0, 0),                      # seccomp_data.nr
            (_JEQ, 0, 2 + checks, nr_socket),
            (_LD_ABS, 0, 0, 16)]                     # seccomp_data.args[0], low 32 bits (little-endian)
    for index, family in enumerate(families):
        code.append((_JEQ, checks - index, 0, family))
    code += [(_RET, 0, 0, _RET_ERRNO | errno.EAFNOSUPPORT), (_RET, 0, 0, _RET_ALLOW)]
    return b"".join(struct.pack("HBBI", *op) for op in code)


def restrict(names: list[str]) -> None:
    """Install the filter on this process (and whatever it execs); raise OSError when the kernel refuses."""
    libc = ctypes.CDLL(None, use_errno=True)
    code = program([getattr(socket, name) for name in names])
    buffer = ctypes.create_string_buffer(code, len(code))
    prog = _Program(len(code) // 8, ctypes.addressof(buffer))
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or \
            libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "cannot install the seccomp filter")


if __name__ == "__main__":
    families, separator, *argv = sys.argv[1:]
    assert separator == "--", "usage: seccomp_families.py 'AF_UNIX AF_INET' -- PROGRAM ARGS…"
    restrict(families.split())
    os.execv(argv[0], argv)
