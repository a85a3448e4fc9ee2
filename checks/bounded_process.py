"""Child processes bounded in time and output, for checks that drive PostgreSQL's client tools.

A child runs from an argv list (never a shell) in its own process group, so at
the deadline the child and everything it started (pg_restore -j workers) are
killed together; `agent.plugin.children` records the group while it runs, so the
agent's shutdown ends it too. Its stdin may be fed from an iterator of byte
chunks (a dump decompressed on the fly, never held whole in memory); stdout
and stderr are merged and capped, keeping the head and the tail, because the
first error and the final summary are what an operator needs. `tick` is called every
`tick_every` seconds while the child runs, for progress lines in the journal.
A child never inherits the agent's environment: without `env` it gets
`agent.plugin.child_env.child_env()` (PATH and the C locale).
"""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from agent.plugin import children
from agent.plugin.child_env import child_env

OUTPUT_CAP_BYTES = 64 * 1024
_ERROR_MARKERS = ("ERROR:", "FATAL:", "error:", "fatal:", "PANIC:")


@dataclass(frozen=True)
class Finished:
    """How a child ended: its exit code (None when killed at the deadline), capped output, time, bytes fed."""

    returncode: int | None
    output: str
    seconds: float
    fed_bytes: int

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    def reason(self) -> str:
        """The first error line of the output, else its last line, else the exit code."""
        lines = [line.strip() for line in self.output.splitlines() if line.strip()]
        error = next((line for line in lines if any(m in line for m in _ERROR_MARKERS)), None)
        if error:
            return error
        if self.returncode is not None and self.returncode < 0:
            return f"killed by signal {-self.returncode}"
        return lines[-1] if lines else f"exit code {self.returncode}"


class _Capped:
    """The first and last OUTPUT_CAP_BYTES/2 of a stream, with a marker for what was skipped."""

    def __init__(self):
        self.head = bytearray()
        self.tail = bytearray()
        self.skipped = 0

    def add(self, chunk: bytes) -> None:
        half = OUTPUT_CAP_BYTES // 2
        room = half - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        if len(self.tail) > half:
            self.skipped += len(self.tail) - half
            del self.tail[: len(self.tail) - half]

    def text(self) -> str:
        middle = f"\n[… {self.skipped} bytes skipped …]\n".encode() if self.skipped else b""
        return bytes(self.head + middle + self.tail).decode("utf-8", "replace")


def run_bounded(argv: list[str], *, deadline: float, env: dict[str, str] | None = None, cwd: str | None = None,
                stdin: Iterable[bytes] | None = None, tick: Callable[[float, int], None] | None = None,
                tick_every: float = 60.0, monotonic: Callable[[], float] = time.monotonic) -> Finished:
    """Given an argv and a `monotonic()` deadline, run the child to its end or kill its group at the deadline.

    Raise OSError when the program cannot be started (OutOfResources when the agent is out of
    descriptors, memory or tasks to start it: not the program's fault). An exception raised by
    the `stdin` iterator (a corrupt stream, a refused script) kills the child
    and propagates, so a half-fed child never keeps running.
    """
    started = monotonic()
    output = _Capped()
    fed = None
    with children.popen(argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=child_env() if env is None else env,
                        cwd=cwd) as proc:
        try:
            fed = _pump(proc, iter(stdin) if stdin is not None else None, output, deadline, tick, tick_every,
                        monotonic, started)
        finally:
            if fed is None:     # the deadline or an error: the child and what it started go now
                children.kill_group(proc)
    return Finished(proc.returncode if fed is not None else None, output.text(), monotonic() - started, fed or 0)


def _pump(proc, source, output: _Capped, deadline, tick, tick_every, monotonic, started) -> int | None:
    """Feed stdin and collect output until the child exits; return bytes fed, or None at the deadline."""
    fed = 0
    pending = memoryview(b"")
    next_tick = started + tick_every
    out_fd = proc.stdout.fileno()
    with selectors.DefaultSelector() as sel:
        sel.register(out_fd, selectors.EVENT_READ, "out")
        if source is not None:
            os.set_blocking(proc.stdin.fileno(), False)
            sel.register(proc.stdin.fileno(), selectors.EVENT_WRITE, "in")
        while True:
            now = monotonic()
            if now >= deadline:
                return None
            if tick is not None and now >= next_tick:
                tick(now - started, fed)
                next_tick = now + tick_every
            wait = min(deadline, next_tick) - now if tick is not None else deadline - now
            for key, _ in sel.select(max(0.0, wait)):
                if key.data == "out":
                    chunk = os.read(out_fd, 65536)
                    if not chunk:
                        sel.unregister(out_fd)
                        if source is not None:
                            sel.unregister(proc.stdin.fileno())
                            proc.stdin.close()
                        return fed if _wait(proc, deadline, monotonic) else None
                    output.add(chunk)
                    continue
                if not pending:
                    chunk = next(source, None)
                    if chunk is None:       # the whole input is fed: EOF tells the child to finish
                        sel.unregister(key.fd)
                        proc.stdin.close()
                        source = None
                        continue
                    pending = memoryview(chunk)
                try:
                    written = os.write(key.fd, pending)
                except BlockingIOError:
                    continue
                except BrokenPipeError:     # the child stopped reading (psql stopped at an error)
                    sel.unregister(key.fd)
                    proc.stdin.close()
                    source = None
                    continue
                pending = pending[written:]
                fed += written


def _wait(proc: subprocess.Popen, deadline: float, monotonic) -> bool:
    try:
        proc.wait(max(0.0, deadline - monotonic()))
        return True
    except subprocess.TimeoutExpired:
        return False


class StreamedOutput:
    """A child whose stdout is consumed as a stream of chunks (`pg_restore -f -` turning an archive into SQL).

    Same treatment as `run_bounded`: argv, own process group (recorded with the
    agent's children, so shutdown ends it), the group killed at the deadline or
    when the consumer stops early (use it as a context manager). stderr is kept
    capped for the reason; iterating raises TimeoutError at the deadline. After
    the stream ends, `returncode` is the exit code (None when the child was
    killed) and `errors` its stderr.
    """

    def __init__(self, argv: list[str], *, deadline: float, env: dict[str, str],
                 monotonic: Callable[[], float] = time.monotonic, chunk_bytes: int = 1024 * 1024):
        self.argv = argv
        self.deadline = deadline
        self.env = env
        self.monotonic = monotonic
        self.chunk_bytes = chunk_bytes
        self.returncode: int | None = None
        self._stderr = _Capped()
        self._started = None
        self._proc: subprocess.Popen | None = None

    @property
    def errors(self) -> str:
        return self._stderr.text()

    def __enter__(self) -> "StreamedOutput":
        """Start the child; raise OSError when it cannot be started."""
        self._started = children.popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, env=self.env)
        self._proc = self._started.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._started.__exit__(*exc)     # kills the group when it still runs, closes the pipes

    def __iter__(self) -> Iterator[bytes]:
        proc = self._proc
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ, "out")
            sel.register(proc.stderr, selectors.EVENT_READ, "err")
            while sel.get_map():
                wait = self.deadline - self.monotonic()
                if wait <= 0:
                    raise TimeoutError()
                for key, _ in sel.select(wait):
                    chunk = os.read(key.fd, self.chunk_bytes if key.data == "out" else 65536)
                    if not chunk:
                        sel.unregister(key.fileobj)
                    elif key.data == "err":
                        self._stderr.add(chunk)
                    else:
                        yield chunk
        if not _wait(proc, self.deadline, self.monotonic):
            raise TimeoutError()
        self.returncode = proc.returncode
