"""The agent under the unit's RestrictAddressFamilies=, which leaves out AF_NETLINK.

systemd (not PID 1 here) would install a seccomp filter on socket(2); `seccomp_families.py` installs the
same rule by hand, with the families read from the shipped unit, and the real agent runs under it with
one check of each kind that opens sockets or starts programs: host resources, TCP and HTTP probes by host
name (getaddrinfo), monitoring plugins, log files, the real smartctl. None may fail for want of a socket
family. A plugin that does need netlink shows what the restriction does to it.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path

import pytest

from agent.plugin.result import Status
from checks.base import CheckContext
from checks.smart import SmartCheck
from tests.conftest import REPO, wait_for
from tests.service import seccomp_families

UNIT = REPO / "systemd" / "maint-agent.service"
PLUGINS = Path("/usr/lib/nagios/plugins")
NETLINK_PLUGIN = textwrap.dedent("""\
    import socket, sys
    try:
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW).close()
    except OSError as exc:
        print(f"CRITICAL - netlink: {exc.strerror}")
        sys.exit(2)
    print("OK - netlink open")
""")

pytestmark = pytest.mark.skipif(not seccomp_families.supported(), reason="seccomp filter written for x86_64/aarch64")


def unit_families() -> list[str]:
    return re.search(r"^RestrictAddressFamilies=(.+)$", UNIT.read_text(), re.M).group(1).split()


def test_unit_address_families_are_unix_and_ip_only():
    assert unit_families() == ["AF_UNIX", "AF_INET", "AF_INET6"]


@pytest.mark.skipif(not (PLUGINS / "check_tcp").exists(), reason="monitoring-plugins-basic not installed")
def test_agent_checks_work_under_the_units_address_families(agent_factory, tmp_path):
    netlink = tmp_path / "check_netlink"
    netlink.write_text(NETLINK_PLUGIN)
    agent = agent_factory(f"""
        agent: {{state_dir: {{state}}, workers: 4}}
        http: {{listen: "127.0.0.1:{{port}}"}}
        checks:
          - {{name: cpu, type: cpu, every: 1h}}
          - {{name: memory, type: memory, every: 1h}}
          - {{name: disk, type: disk, every: 1h, mounts: [/]}}
          - {{name: load, type: load, every: 1h}}
          - {{name: procs, type: process, every: 1h, cmdline: "maint-agent"}}
          - {{name: latency, type: network_latency, every: 1h, targets: ["localhost:{{port}}"]}}
          - {{name: tcp, type: tcp, every: 1h, target: "localhost:{{port}}"}}
          - {{name: http, type: http, every: 1h, url: "http://localhost:{{port}}/healthz"}}
          - {{name: plugin-load, type: nagios, every: 1h,
              command: [{PLUGINS}/check_load, -w, "99,99,99", -c, "99,99,99"]}}
          - {{name: plugin-tcp, type: nagios, every: 1h, command: [{PLUGINS}/check_tcp, -H, localhost, -p, "{{port}}"]}}
          - {{name: logs, type: log_scan, every: 1h, paths: ["{tmp_path}/*.yaml"]}}
          - {{name: smart, type: smart, every: 1h}}
          - {{name: plugin-netlink, type: nagios, every: 1h, command: [{sys.executable}, {netlink}]}}
    """)
    wrapper = (sys.executable, str(Path(seccomp_families.__file__)), " ".join(unit_families()), "--")
    agent.start(wrapper=wrapper)

    def statuses() -> dict[str, dict]:
        out = agent.cli("status", "--format", "json")
        return {row["check"]: row for row in json.loads(out.stdout)["checks"] if row["status"] != "never_run"}

    rows = wait_for(lambda: (lambda r: len(r) == 13 and all(row["status"] for row in r.values()) and r)(statuses()),
                    30, what="every check's first run")
    assert agent.stop() == 0
    assert rows.pop("plugin-netlink")["summary"] == "CRITICAL - netlink: Address family not supported by protocol"
    smart = rows.pop("smart")
    unrestricted = SmartCheck(SmartCheck.Options.model_validate({"name": "smart", "type": "smart"})).run(
        CheckContext(timeout=30))
    assert smart["summary"] == unrestricted.summary, "smartctl sees the same devices as without the filter"
    for name, row in rows.items():
        assert row["status"] == Status.OK.label, f"{name}: {row['summary']}"
    others = [line for line in agent.log.read_text().splitlines() if "check=plugin-netlink" not in line]
    assert not [line for line in others if "family" in line]
