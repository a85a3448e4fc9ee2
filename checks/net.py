"""TCP connects and run deadlines shared by the network probes (network_latency, tcp, tls_cert, http, redis)."""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
import time
from typing import Callable

from agent.plugin.faults import agent_resources
from agent.plugin.units import format_duration


class ResolveTimeout(TimeoutError):
    """The resolver did not answer in time (a dead DNS server); the lookup is left to finish in its thread."""


def resolve(host: str, port: int, timeout: float, getaddrinfo: Callable | None = None) -> list[tuple]:
    """Given host, port and a timeout, return getaddrinfo's TCP addresses for them.

    Raise socket.gaierror when the name does not resolve and ResolveTimeout when the resolver
    has not answered within `timeout`. getaddrinfo cannot be interrupted and has no timeout of
    its own (glibc waits resolv.conf's timeout × attempts × servers), so a name is looked up in
    a short-lived daemon thread that is abandoned when it overruns; an address literal is
    parsed in place, as bytes when it is ASCII (a str host loads the idna codec, ~0.6 MiB
    resident, which a literal does not need).
    """
    lookup = getaddrinfo or socket.getaddrinfo
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        pass
    else:
        literal = host.encode("ascii") if host.isascii() else host
        return lookup(literal, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    outcome: list[tuple[list | None, BaseException | None]] = []

    def work() -> None:
        try:
            outcome.append((lookup(host, port, type=socket.SOCK_STREAM), None))
        except Exception as exc:   # handed to the caller's thread below, not swallowed
            outcome.append((None, exc))

    thread = threading.Thread(target=work, name=f"resolve {host}", daemon=True)
    thread.start()
    thread.join(max(timeout, 0.0))
    if not outcome:
        raise ResolveTimeout(f"resolving {host} timed out")
    addresses, error = outcome[0]
    if error is not None:
        raise error
    return addresses


def open_connection(host: str, port: int, timeout: float) -> tuple[socket.socket, float]:
    """Given host, port and a timeout, return a connected socket and the seconds the connect took.

    Resolves host and tries each address in turn within one timeout in all (socket.create_connection
    would spend the full timeout on each address, after a lookup without any); raise ResolveTimeout
    or socket.gaierror when the name does not resolve, the last OSError when no address connects,
    OutOfResources when the agent cannot make a socket (out of descriptors: not the target's fault).
    """
    deadline = time.monotonic() + timeout
    error: OSError = TimeoutError("timed out")
    with agent_resources():   # the lookup's and socket()'s EMFILE is the agent's, which probes must not catch
        addresses = resolve(host, port, timeout)
    for family, kind, proto, _, address in addresses:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        with agent_resources():
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
    if isinstance(exc, ResolveTimeout):
        return f"name resolution timed out after {format_duration(timeout)}"
    if isinstance(exc, TimeoutError):
        return f"timed out after {format_duration(timeout)}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host: {exc.strerror}"
    ssl = sys.modules.get("ssl")   # a TLS error implies a check imported ssl: not imported here (~1 MiB resident)
    if ssl and isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if ssl and isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {(exc.reason or str(exc)).replace('_', ' ').lower()}"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by peer"
    return exc.strerror or str(exc)


def describe_connect_error(exc: OSError, timeout: float) -> str:
    """describe_error for the connect step: a timeout there reads `connect timed out after 2s`."""
    text = describe_error(exc, timeout)
    return f"connect {text}" if isinstance(exc, TimeoutError) and not isinstance(exc, ResolveTimeout) else text


class SocketDeadline:
    """Shuts the watched sockets down when a run's time is up.

    Client libraries (httpx, redis-py) apply their timeouts to each socket operation, so a
    peer that answers every step slowly, or trickles a byte at a time, never trips them; this
    bounds the exchange as a whole: a blocked read or write then fails at once. Sockets are
    held as duplicated descriptors, so shutting them down can never hit an unrelated socket
    that reused a closed descriptor number (and a TLS socket's dup is a plain one).
    """

    def __init__(self, seconds: float):
        self.fired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def watch(self, sock: socket.socket) -> None:
        """Shut sock down at the deadline (at once when it has passed)."""
        with self._lock:
            duplicate = socket.fromfd(sock.fileno(), sock.family, sock.type, sock.proto)
            self._sockets.append(duplicate)
            if self.fired:
                _shutdown(duplicate)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            for sock in self._sockets:
                _shutdown(sock)

    def __enter__(self) -> "SocketDeadline":
        self._timer.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass   # already closed by the peer
