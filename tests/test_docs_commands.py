"""The README and docs work as written. Fenced shell blocks marked `<!-- docs-test: run -->` run line by
line against a temporary agent (a real daemon on a free port; `maint-agent` and `.venv/bin/maint-agent`
run this checkout with that agent's config; 127.0.0.1:9469 is its address); every other `maint-agent …`
command, fenced or inline, must parse: its command words, options and arguments exist."""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

MARK = "<!-- docs-test: run -->"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`((?:\S*/)?maint-agent [^`]+)`")
PLACEHOLDERS = {"CHECK": "cpu", "NAME": "cpu", "C": "cpu", "A": "restart-web", "FILE": "agent.yaml", "N": "5",
                "ID": "1", "DATE": "2026-11-02", "CHECKLIST.ITEM": "weekly.review"}


def blocks(path: Path) -> list[tuple[int, bool, list[str]]]:
    """(line, marked runnable, commands) of each fenced shell block; continuation lines joined."""
    text = path.read_text()
    found = []
    for match in FENCE.finditer(text):
        if match.group(1) not in ("sh", "bash", "shell", "console"):
            continue
        before = text[:match.start()].rstrip().rsplit("\n", 1)[-1]
        commands, pending = [], ""
        for line in match.group(2).splitlines():
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            line = pending + line
            pending = ""
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(line.strip())
        found.append((text[:match.start()].count("\n") + 1, before.strip() == MARK, commands))
    return found


def agent_commands() -> list[tuple[str, str]]:
    """(where, command) of every `maint-agent …` the docs show, without synopsis brackets or ellipses."""
    out = []
    for path in DOCS:
        name = path.relative_to(REPO)
        for line, _, commands in blocks(path):
            out += [(f"{name}:{line}", c) for c in commands if re.match(r"(\S*/)?maint-agent ", c)]
        for number, text in enumerate(path.read_text().splitlines(), 1):
            out += [(f"{name}:{number}", m.group(1)) for m in INLINE.finditer(text)]
    return [(where, c) for where, c in out if not re.search(r"[\[\]…|<>]|\\\|", c)]


def argv_of(command: str) -> list[str]:
    """The arguments after `maint-agent`, up to a comment, a pipe or a redirection; placeholders filled in."""
    words = shlex.split(command.split(" #", 1)[0], comments=False)
    words = words[1:]
    for stop in ("|", ">", "&&", ";", "2>&1"):
        if stop in words:
            words = words[:words.index(stop)]
    return [PLACEHOLDERS.get(w, w) for w in words]


@pytest.mark.parametrize("where, command", agent_commands(), ids=lambda v: v if ":" in str(v) else None)
def test_docs_every_maint_agent_command_parses(where, command, capsys):
    from agent.cli.main import build_parser
    argv = argv_of(command)
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        error = capsys.readouterr().err.strip()
        mention = not any(w.startswith("-") for w in argv) and "arguments are required" in error
        if exc.code and not mention:   # prose naming a command (`maint-agent fleet targets`) is not a call
            pytest.fail(f"{where}: `{command}` does not parse: {error}")


def test_docs_mark_runnable_blocks():
    assert sum(marked for _, marked, _ in blocks(REPO / "README.md")) >= 2


@pytest.fixture(scope="module")
def docs_agent(tmp_path_factory):
    """A real agent with the checks the docs' runnable blocks name, `maint-agent` on PATH."""
    from tests.conftest import AgentProcess, free_port
    base = tmp_path_factory.mktemp("docs")
    port = free_port()
    config = base / "agent.yaml"
    config.write_text(f"""
agent: {{state_dir: {base}/var}}
http: {{listen: "127.0.0.1:{port}"}}
checks:
  - {{name: cpu, type: cpu, every: 1s, warning: 80%, for: 5m}}
  - {{name: disk-root, type: disk, every: 1s, mounts: [/], warning: 80%, critical: 90%}}
  - {{name: monthly-capacity, type: disk, schedule: monthly, mounts: [/], warning: 70%}}
""")
    bin_dir = base / "bin"
    (bin_dir / ".venv" / "bin").mkdir(parents=True)
    wrapper = f'#!/bin/sh\nexec {sys.executable} -m agent.cli "$@"\n'
    for path in (bin_dir / "maint-agent", bin_dir / ".venv" / "bin" / "maint-agent"):
        path.write_text(wrapper)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    (bin_dir / "agent.yaml").symlink_to(config)
    agent = AgentProcess(config, port, base / "agent.log").start()
    from tests.conftest import wait_for
    wait_for(lambda: (base / "var" / "maint-agent.db").exists(), what="the store")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "MAINT_AGENT_CONFIG": str(config),
           "PYTHONPATH": str(REPO)}
    yield agent, bin_dir, env
    agent.stop()


RUNNABLE = [(f"{path.relative_to(REPO)}:{line}", command) for path in DOCS
            for line, marked, commands in blocks(path) if marked for command in commands]


@pytest.mark.parametrize("where, command", RUNNABLE, ids=lambda v: v if ":" in str(v) else None)
def test_docs_runnable_commands_work_against_a_real_agent(docs_agent, where, command):
    agent, workdir, env = docs_agent
    line = command.replace("127.0.0.1:9469", f"127.0.0.1:{agent.port}")
    done = subprocess.run(["bash", "-o", "pipefail", "-c", line], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=60)
    problem = done.returncode not in (0, 1) or "Traceback" in done.stderr or "usage:" in done.stderr
    assert not problem, f"{where}: `{command}` exited {done.returncode}:\n{done.stdout[-1500:]}{done.stderr[-1500:]}"
    assert done.stdout.strip(), f"{where}: `{command}` printed nothing"
