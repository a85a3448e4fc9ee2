"""TCP connects shared by the network probes (network_latency, tcp, tls_cert)."""

from __future__ import annotations

import socket
import ssl
import time

from agent.units import format_duration


def open_connection(host: str, port: int, timeout: float) -> tuple[socket.socket, float]:
    """Given host, port and a timeout, return a connected socket and the seconds the connect took.

    Tries each address of host in turn within one timeout in all (socket.create_connection would
    spend the full timeout on each address); raise the last OSError when none connects.
    """
    deadline = time.monotonic() + timeout
    error: OSError = TimeoutError("timed out")
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock = socket.socket(family, kind, proto)
        sock.settimeout(left)
        started = time.perf_counter()
        try:
            sock.connect(address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock, time.perf_counter() - started
    raise error


def connect_time(host: str, port: int, timeout: float) -> float:
    """Seconds to open (and close again) a TCP connection to host:port; raise OSError when it fails."""
    sock, seconds = open_connection(host, port, timeout)
    sock.close()
    return seconds


def describe_error(exc: OSError, timeout: float) -> str:
    """One phrase for the operator: `connection refused`, `timed out after 2s`, `TLS handshake failed: …`."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return f"timed out after {format_duration(timeout)}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host: {exc.strerror}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {(exc.reason or str(exc)).replace('_', ' ').lower()}"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by peer"
    return exc.strerror or str(exc)


def describe_connect_error(exc: OSError, timeout: float) -> str:
    """describe_error for the connect step: a timeout there reads `connect timed out after 2s`."""
    text = describe_error(exc, timeout)
    return f"connect {text}" if isinstance(exc, TimeoutError) else text
