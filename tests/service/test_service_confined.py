"""The agent runs under the unit's confinement. systemd cannot be PID 1 here, so the kernel features the
unit relies on are applied directly: an unprivileged user (User=), no_new_privs (NoNewPrivileges=), no
capabilities (CapabilityBoundingSet=), and no writable+executable memory (MemoryDenyWriteExecute=, here
the kernel's PR_SET_MDWE, which refuses the same mappings). The seccomp filter and the mount namespace
are not reproduced; `systemd-analyze` checks those lines (test_service_unit.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port, have, wait_for
from tests.service.conftest import Pki, client_context

RUN_CONFINED = """
import ctypes, runpy, sys
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:
    sys.exit("PR_SET_MDWE failed")
sys.argv = ["maint-agent", "run", "--config", sys.argv[1]]
runpy.run_module("agent.cli", run_name="__main__", alter_sys=True)
"""
"""PR_SET_MDWE, then the agent in the same process (nobody may not exec this checkout's interpreter path)."""


def mdwe_supported() -> bool:
    """PR_SET_MDWE exists from Linux 6.3; tried in a child so this process stays unrestricted."""
    probe = "import ctypes, sys; sys.exit(ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0)"
    return subprocess.run([sys.executable, "-c", probe], timeout=30).returncode == 0


pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0 or not have("setpriv"), reason="needs root and setpriv to drop to nobody"),
    pytest.mark.skipif(not mdwe_supported(), reason="kernel without PR_SET_MDWE (Linux < 6.3)"),
]


@pytest.fixture
def confined_dir():
    """A directory `nobody` can reach (pytest's own tmp dirs are root-only)."""
    base = Path(tempfile.mkdtemp(prefix="maint-confined-", dir="/tmp"))
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base)


def test_confined_agent_runs_checks_and_serves_tls_without_privileges(confined_dir, pki: Pki):
    import bcrypt
    import httpx
    tls = confined_dir / "tls"
    tls.mkdir()
    for source in (pki.server_cert, pki.server_key, pki.ca):
        shutil.copy(source, tls / source.name)
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    (confined_dir / "web.yml").write_text(textwrap.dedent(f"""
        tls_server_config: {{cert_file: tls/{pki.server_cert.name}, key_file: tls/{pki.server_key.name},
                            client_auth_type: RequireAndVerifyClientCert, client_ca_file: tls/{pki.ca.name}}}
        basic_auth_users: {{prometheus: "{hashed}"}}
    """))
    port = free_port()
    config = confined_dir / "agent.yaml"
    config.write_text(textwrap.dedent(f"""
        agent: {{state_dir: {confined_dir}/state}}
        http: {{listen: "127.0.0.1:{port}", web_config: {confined_dir}/web.yml}}
        checks:
          - {{name: cpu, type: cpu, every: 200ms}}
          - {{name: memory, type: memory, every: 200ms}}
          - {{name: disk, type: disk, every: 200ms, mounts: [/]}}
          - {{name: procs, type: process, every: 200ms, cmdline: "pytest", critical: 1}}   # root's, seen by nobody
          - {{name: config-age, type: file, every: 200ms, path: {config}}}
          - {{name: tcp-self, type: tcp, every: 200ms, target: "127.0.0.1:{port}"}}
    """))
    # the store is migrated beforehand: the agent migrates in a child process of this checkout's interpreter,
    # which lives where nobody may not exec it on this machine (an installed /opt/maint-agent has no such problem)
    from agent.store.writer import Store
    Store(confined_dir / "state" / "maint-agent.db").close()
    for path in (confined_dir / "state", *(confined_dir / "state").iterdir(), *tls.iterdir(), confined_dir / "web.yml",
                 config):
        shutil.chown(path, "nobody", "nogroup")
        os.chmod(path, 0o700 if path.is_dir() else 0o600)
    log = open(confined_dir / "agent.log", "wb")
    proc = subprocess.Popen(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--no-new-privs",
                             "--inh-caps=-all", "--bounding-set=-all", "--", sys.executable, "-c", RUN_CONFINED,
                             str(config)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "HOME": "/nonexistent"})
    try:
        with httpx.Client(verify=client_context(pki), auth=("prometheus", "pw"), timeout=5) as http:
            def all_ran():
                if proc.poll() is not None:
                    pytest.fail(f"the confined agent exited:\n{(confined_dir / 'agent.log').read_text()}")
                try:
                    body = http.get(f"https://127.0.0.1:{port}/metrics").text
                except httpx.TransportError:
                    return False
                return all(f'maint_check_status{{check="{name}"' in body
                           for name in ("cpu", "memory", "disk", "procs", "config-age", "tcp-self")) and body
            body = wait_for(all_ran, 20, what="every check to report under confinement")
        for name in ("procs", "tcp-self", "disk", "config-age"):   # OK: each saw what it probes
            assert re.search(rf'^maint_check_status{{check="{name}",[^}}]*}} 0\.0$', body, re.M), name
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert "NoNewPrivs:\t1" in status and "CapBnd:\t0000000000000000" in status
        assert int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1]) == 65534
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
        log.close()
    assert "Traceback" not in (confined_dir / "agent.log").read_text()
