"""host:port parsing shared by the listen address and network probes."""

from __future__ import annotations

import re


def split_target(target: str) -> tuple[str, int]:
    """Given "host:port" or "[v6]:port", return (host, port); raise ValueError otherwise."""
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\[\]\s]+):(\d+)", target)
    if not match:
        raise ValueError(f"target {target!r} must be host:port (IPv6 as [addr]:port)")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 < port < 65536:
        raise ValueError(f"target {target!r}: port must be 1..65535")
    return host, port


def is_loopback(host: str) -> bool:
    """Given a listen host, return whether only this machine can connect to it (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    import ipaddress
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:   # another host name: it may resolve to anything
        return False
