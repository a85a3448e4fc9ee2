"""Host checks against the real host: a real tmpfs, real sockets, real child processes, real files.

Nothing here mocks psutil; the evaluation path (agent.evaluate) is exercised
where the threshold semantics belong to the check (inodes, minimum counts).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from pydantic import ValidationError

from agent.evaluate import WindowState, evaluate
from agent.plugin.result import CheckResult, Status
from checks import CHECK_TYPES
from checks.base import CheckContext
from checks.system import (
    CpuCheck, DiskCheck, FileCheck, LoadCheck, MemoryCheck, NetworkLatencyCheck, ProcessCheck, SwapCheck,
    split_target,
)
from tests.conftest import REPO, wait_for

_unique = itertools.count(1)


def make(check_cls, **options):
    """Build a check from an options dict the way the config loader does."""
    name = options.pop("name", check_cls.TYPE.replace("_", "-"))
    return check_cls(check_cls.Options.model_validate({"name": name, "type": check_cls.TYPE, **options}))


def run(check, timeout: float = 5.0, **ctx) -> CheckResult:
    return check.run(CheckContext(timeout=timeout, **ctx))


def values(result: CheckResult, name: str) -> dict:
    """Map a sample name's label tuples to values, e.g. {(('mount', '/'),): 0.4}."""
    return {s.labels: s.value for s in result.samples if s.name == name}


def only(result: CheckResult, name: str, **labels: str) -> float:
    matches = [s.value for s in result.samples if s.name == name and dict(s.labels) == labels]
    assert len(matches) == 1, f"expected one {name}{labels} in {result.samples}"
    return matches[0]


def verdict(check, result: CheckResult):
    return evaluate(check, result, WindowState(), time.time())


# --- cpu, memory, swap, load ------------------------------------------------------------------

def test_cpu_first_run_samples_about_a_second_then_second_run_is_instant():
    check = make(CpuCheck)
    t0 = time.monotonic()
    first = run(check)
    first_took = time.monotonic() - t0
    assert first.status is Status.OK, first.summary
    assert 0.9 <= first_took <= 1.5
    # the second run compares with the first run's sample: wait until the kernel has
    # accounted some CPU time since then (10 ms ticks), so the delta is not empty
    before = sum(psutil.cpu_times())
    wait_for(lambda: sum(psutil.cpu_times()) > before, timeout=5, interval=0.01, what="CPU time to advance")
    t0 = time.monotonic()
    second = run(check)
    assert time.monotonic() - t0 < 0.1
    assert second.status is Status.OK, second.summary
    for result in (first, second):
        assert 0.0 <= only(result, "usage_ratio") <= 1.0
        assert 0.0 <= only(result, "iowait_ratio") <= 1.0
        assert re.fullmatch(r"CPU \d+\.\d% busy, iowait \d+\.\d%", result.summary)


def test_cpu_first_run_with_short_timeout_samples_half_of_it():
    t0 = time.monotonic()
    result = run(make(CpuCheck), timeout=0.4)
    assert time.monotonic() - t0 < 0.35
    assert result.status in (Status.OK, Status.UNKNOWN)


def test_memory_real_host_reports_ratio_and_bytes():
    result = run(make(MemoryCheck))
    assert result.status is Status.OK
    total = only(result, "total_bytes")
    assert total == psutil.virtual_memory().total
    assert 0 < only(result, "available_bytes") <= total
    assert 0.0 <= only(result, "used_ratio") <= 1.0


def test_swap_real_host_reports_ratio_within_bounds():
    result = run(make(SwapCheck))
    assert result.status is Status.OK
    used, total = only(result, "used_bytes"), only(result, "total_bytes")
    assert 0.0 <= only(result, "used_ratio") <= 1.0
    assert 0 <= used <= total
    if total == 0:
        assert result.summary == "no swap configured"
        assert only(result, "used_ratio") == 0


def test_load_real_host_reports_per_core_for_three_periods():
    check = make(LoadCheck, period="1m")
    result = run(check)
    assert result.status is Status.OK
    per_core = values(result, "per_core")
    assert set(per_core) == {(("period", p),) for p in ("1m", "5m", "15m")}
    assert all(v >= 0 for v in per_core.values())
    expected = psutil.getloadavg()[2] / psutil.cpu_count()
    assert only(result, "per_core", period="15m") == pytest.approx(expected, abs=0.05)
    assert [s.label("period") for s in check.threshold_samples(result)] == ["1m"]


# --- disk -------------------------------------------------------------------------------------

@pytest.fixture
def tmpfs(tmp_path: Path):
    """A real 4 MiB tmpfs with 64 inodes, unmounted at the end; skipped where mounting is not allowed."""
    mountpoint = tmp_path / "tmpfs"
    mountpoint.mkdir()
    if not shutil.which("mount"):
        pytest.skip("no mount(8) on this host")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,nr_inodes=64", "tmpfs", str(mountpoint)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


def fill(path: Path, size: int) -> None:
    path.write_bytes(b"\0" * size)


def test_disk_empty_tmpfs_is_ok_with_its_size(tmpfs):
    mount = str(tmpfs)
    result = run(make(DiskCheck, mounts=[mount], warning="80%", critical="90%"))
    assert result.status is Status.OK
    assert only(result, "size_bytes", mount=mount) == 4 * 2**20
    assert only(result, "used_ratio", mount=mount) < 0.05
    assert only(result, "free_bytes", mount=mount) > 3.9 * 2**20
    assert 0 < only(result, "inodes_used_ratio", mount=mount) < 0.05
    assert mount in result.summary


def test_disk_tmpfs_filled_past_warning_is_warning(tmpfs):
    mount = str(tmpfs)
    fill(tmpfs / "data", int(3.4 * 2**20))
    check = make(DiskCheck, mounts=[mount], warning="80%", critical="90%")
    result = run(check)
    assert 0.80 < only(result, "used_ratio", mount=mount) < 0.90
    v = verdict(check, result)
    assert v.status is Status.WARNING
    assert f"used_ratio {mount} " in v.summary


def test_disk_tmpfs_filled_past_critical_is_critical(tmpfs):
    mount = str(tmpfs)
    fill(tmpfs / "data", int(3.8 * 2**20))
    check = make(DiskCheck, mounts=[mount], warning="80%", critical="90%")
    result = run(check)
    assert only(result, "used_ratio", mount=mount) > 0.90
    assert only(result, "free_bytes", mount=mount) < 0.25 * 2**20
    v = verdict(check, result)
    assert v.status is Status.CRITICAL
    assert f"used_ratio {mount} " in v.summary


def test_disk_tmpfs_inodes_exhausted_is_critical_with_space_free(tmpfs):
    mount = str(tmpfs)
    for i in range(60):
        (tmpfs / f"f{i}").touch()
    check = make(DiskCheck, mounts=[mount], warning="80%", critical="90%")
    result = run(check)
    assert only(result, "used_ratio", mount=mount) < 0.05
    assert only(result, "inodes_used_ratio", mount=mount) > 0.90
    v = verdict(check, result)
    assert v.status is Status.CRITICAL
    assert f"inodes_used_ratio {mount} " in v.summary
    assert not re.search(rf"(?<!inodes_)used_ratio {re.escape(mount)} ", v.summary)


def test_disk_several_mounts_worst_is_reported_naming_full_one(tmpfs):
    mount = str(tmpfs)
    fill(tmpfs / "data", int(3.8 * 2**20))
    check = make(DiskCheck, mounts=["/", mount], critical="90%")
    result = run(check)
    assert {dict(s.labels)["mount"] for s in result.samples} == {"/", mount}
    v = verdict(check, result)
    assert v.status is Status.CRITICAL
    assert v.summary.startswith(f"used_ratio {mount} ")


def test_disk_path_below_mount_measures_that_filesystem(tmpfs):
    (tmpfs / "sub").mkdir()
    fill(tmpfs / "data", 2 * 2**20)
    path = str(tmpfs / "sub")
    result = run(make(DiskCheck, mounts=[path]))
    assert only(result, "size_bytes", mount=path) == 4 * 2**20
    assert only(result, "used_ratio", mount=path) == pytest.approx(0.5, abs=0.02)


def test_disk_nonexistent_mount_is_critical_naming_it():
    missing = "/nonexistent/maint-agent-mount"
    check = make(DiskCheck, mounts=["/", missing], warning="80%", **{"for": "10m"})
    result = run(check)
    assert result.status is Status.CRITICAL
    assert missing in result.summary
    assert "No such file or directory" in result.summary
    assert values(result, "used_ratio").keys() == {(("mount", "/"),)}
    assert verdict(check, result).status is Status.CRITICAL


def test_disk_mount_listed_twice_gives_one_series_and_names_the_duplicate():
    """The guard every check shares (CheckResult): a repeated series is kept once, never exported twice."""
    result = run(make(DiskCheck, mounts=["/", "/"]))
    assert only(result, "used_ratio", mount="/") >= 0
    assert len({(s.name, s.labels) for s in result.samples}) == len(result.samples)
    assert "used_ratio{mount=/}" in result.details["duplicate_samples"]


def test_disk_relative_mount_rejected_by_options():
    with pytest.raises(ValidationError, match="must be an absolute path"):
        make(DiskCheck, mounts=["var/lib"])


# --- network_latency --------------------------------------------------------------------------

@pytest.fixture
def listener():
    """A listening TCP socket on 127.0.0.1 (connections complete in the kernel's backlog)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield sock.getsockname()[1]
    sock.close()






def test_network_latency_listening_port_is_ok_with_positive_latency(listener):
    target = f"127.0.0.1:{listener}"
    result = run(make(NetworkLatencyCheck, targets=[target]))
    assert result.status is Status.OK, result.summary
    assert 0 < only(result, "latency_seconds", target=target) < 1
    assert only(result, "reachable", target=target) == 1
    assert result.summary.startswith(f"connect {target} ")


def test_network_latency_closed_port_is_critical_unreachable(closed_port):
    target = f"127.0.0.1:{closed_port}"
    check = make(NetworkLatencyCheck, targets=[target], warning="1s", **{"for": "5m"})
    t0 = time.monotonic()
    result = run(check)
    assert time.monotonic() - t0 < 1
    assert result.status is Status.CRITICAL
    assert f"{target} unreachable" in result.summary
    assert "refused" in result.summary.lower()
    assert only(result, "reachable", target=target) == 0
    assert values(result, "latency_seconds") == {}
    assert verdict(check, result).status is Status.CRITICAL     # `for:` never delays unreachable


def test_network_latency_one_target_down_names_it_and_keeps_the_other(listener, closed_port):
    up, down = f"127.0.0.1:{listener}", f"127.0.0.1:{closed_port}"
    result = run(make(NetworkLatencyCheck, targets=[up, down]))
    assert result.status is Status.CRITICAL
    assert result.summary.startswith(f"{down} unreachable")
    assert up in result.summary
    assert only(result, "reachable", target=up) == 1
    assert only(result, "reachable", target=down) == 0
    assert only(result, "latency_seconds", target=up) > 0


def test_network_latency_full_backlog_ends_within_run_timeout(blackhole):
    target = f"127.0.0.1:{blackhole}"
    timeout = 1.0
    check = make(NetworkLatencyCheck, targets=[target], connect_timeout="10s", attempts=3)
    t0 = time.monotonic()
    result = run(check, timeout=timeout)
    elapsed = time.monotonic() - t0
    assert elapsed < timeout + 1
    assert elapsed >= timeout * 0.9
    assert result.status is Status.CRITICAL
    assert f"{target} unreachable: timed out" in result.summary
    assert only(result, "reachable", target=target) == 0


def test_network_latency_tiny_connect_timeout_reports_timed_out(blackhole):
    target = f"127.0.0.1:{blackhole}"
    check = make(NetworkLatencyCheck, targets=[target], connect_timeout="200ms", attempts=5)
    t0 = time.monotonic()
    result = run(check, timeout=10)
    assert time.monotonic() - t0 < 0.2 + 1
    assert result.status is Status.CRITICAL
    assert "timed out" in result.summary


def test_network_latency_zero_warning_turns_any_latency_into_warning(listener):
    target = f"127.0.0.1:{listener}"
    check = make(NetworkLatencyCheck, targets=[target], warning=0, attempts=1)
    v = verdict(check, run(check))
    assert v.status is Status.WARNING
    assert v.summary.startswith(f"latency_seconds {target} ")


def test_network_latency_ipv6_bracket_target_connects():
    try:
        sock = socket.socket(socket.AF_INET6)
        sock.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"::1 unavailable: {exc.strerror}")
    with sock:
        sock.listen(8)
        target = f"[::1]:{sock.getsockname()[1]}"
        result = run(make(NetworkLatencyCheck, targets=[target], attempts=1))
    assert result.status is Status.OK, result.summary
    assert only(result, "latency_seconds", target=target) > 0


@pytest.mark.parametrize(("target", "expected"), [
    ("10.0.0.5:5432", ("10.0.0.5", 5432)),
    ("db.internal:6379", ("db.internal", 6379)),
    ("[::1]:22", ("::1", 22)),
    ("[fe80::1:2]:8080", ("fe80::1:2", 8080)),
])
def test_split_target_valid_forms_parse(target, expected):
    assert split_target(target) == expected


@pytest.mark.parametrize("target", ["10.0.0.5", "::1:22", "host:0", "host:70000", "[::1]", "host: 22", ":22"])
def test_network_latency_invalid_target_rejected_by_options(target):
    with pytest.raises(ValidationError, match="target"):
        make(NetworkLatencyCheck, targets=[target])


# --- process ----------------------------------------------------------------------------------

class Spawner:
    """Starts long-sleeping children with a distinctive argv; kills and reaps them all at the end."""

    def __init__(self, program: str = "sleep", name: str = "sleep"):
        self.program = program
        self.name = name
        self.arg = f"3{os.getpid() % 1000:03d}.{next(_unique)}{time.monotonic_ns() % 10**6}"
        self.children: list[subprocess.Popen] = []

    @property
    def pattern(self) -> str:
        return re.escape(f"{self.program} {self.arg}")

    def spawn(self, count: int = 1) -> list[subprocess.Popen]:
        new = [subprocess.Popen([self.program, self.arg]) for _ in range(count)]
        self.children += new
        return new

    def alive(self) -> int:
        """Children that exist and are not zombies (what a process table shows as running)."""
        count = 0
        for child in self.children:
            try:
                if psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
                    count += 1
            except psutil.NoSuchProcess:
                pass
        return count

    def stop(self) -> None:
        for child in self.children:
            child.kill()
            child.wait()


@pytest.fixture
def sleepers():
    spawner = Spawner()
    yield spawner
    spawner.stop()


@pytest.fixture
def named_sleepers(tmp_path: Path):
    """Children of a copy of sleep(1) with a unique name (≤ 15 chars, the kernel's comm limit)."""
    name = f"mt-slp-{os.getpid() % 10000:04d}{next(_unique):02d}"[:15]
    program = tmp_path / name
    shutil.copy("/bin/sleep", program)
    spawner = Spawner(str(program), name)
    yield spawner
    spawner.stop()


def count_of(result: CheckResult) -> float:
    return only(result, "instances")


def test_process_cmdline_regex_counts_spawned_children(sleepers):
    sleepers.spawn(3)
    check = make(ProcessCheck, cmdline=sleepers.pattern)
    result = wait_for(lambda: (r := run(check)) and count_of(r) == 3 and r, timeout=5, what="3 matches")
    assert result.status is Status.OK
    assert result.summary == f"3 processes match /{sleepers.pattern}/"


def test_process_cmdline_no_match_counts_zero():
    result = run(make(ProcessCheck, cmdline=r"maint-agent-no-such-process-\d{9}"))
    assert result.status is Status.OK
    assert count_of(result) == 0


def test_process_name_counts_exact_comm(named_sleepers):
    named_sleepers.spawn(2)
    check = make(ProcessCheck, process_name=named_sleepers.name)
    wait_for(lambda: count_of(run(check)) == 2, timeout=5, what="2 processes by name")
    assert count_of(run(make(ProcessCheck, process_name=named_sleepers.name[:-1]))) == 0


def test_process_user_filter_counts_only_that_user(sleepers):
    sleepers.spawn(2)
    me = psutil.Process().username()
    mine = make(ProcessCheck, cmdline=sleepers.pattern, user=me)
    wait_for(lambda: count_of(run(mine)) == 2, timeout=5, what="2 processes of the current user")
    other = "nobody" if me != "nobody" else "root"
    assert count_of(run(make(ProcessCheck, cmdline=sleepers.pattern, user=other))) == 0


def test_process_critical_two_with_one_running_is_critical_then_ok_with_two(sleepers):
    check = make(ProcessCheck, cmdline=sleepers.pattern, critical=2)
    sleepers.spawn(1)
    one = wait_for(lambda: (r := run(check)) and count_of(r) == 1 and r, timeout=5, what="1 match")
    v = verdict(check, one)
    assert v.status is Status.CRITICAL
    assert v.summary.startswith("instances 1 < 2 — ")
    sleepers.spawn(1)
    two = wait_for(lambda: (r := run(check)) and count_of(r) == 2 and r, timeout=5, what="2 matches")
    assert verdict(check, two).status is Status.OK


def test_process_count_drops_when_a_child_dies(sleepers):
    first, _ = sleepers.spawn(2)
    check = make(ProcessCheck, cmdline=sleepers.pattern)
    wait_for(lambda: count_of(run(check)) == 2, timeout=5, what="2 matches")
    first.kill()
    first.wait()
    wait_for(lambda: count_of(run(check)) == 1, timeout=5, what="1 match after kill")


def test_process_name_does_not_count_unreaped_zombie(named_sleepers):
    """A worker that died but was not yet reaped by its parent is not running."""
    child, _ = named_sleepers.spawn(2)
    check = make(ProcessCheck, process_name=named_sleepers.name)
    wait_for(lambda: count_of(run(check)) == 2, timeout=5, what="2 processes by name")
    child.kill()                      # not waited for: it stays a zombie until the fixture reaps it
    wait_for(lambda: named_sleepers.alive() == 1, timeout=5, what="the killed child to become a zombie")
    assert psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE
    assert count_of(run(check)) == 1


def test_process_does_not_count_the_agent_itself():
    """The agent's own argv may contain the pattern (e.g. in a --check argument); it is not a worker."""
    marker = f"maint-agent-self-{os.getpid()}-{next(_unique)}"
    program = (
        "import sys; from checks.system import ProcessCheck; from checks.base import CheckContext;"
        "o = ProcessCheck.Options.model_validate({'name': 'p', 'type': 'process', 'cmdline': sys.argv[1]});"
        "print(ProcessCheck(o).run(CheckContext(timeout=5)).samples[0].value)")
    done = subprocess.run([sys.executable, "-c", program, marker], cwd=REPO, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) == 0


def test_process_without_pattern_is_unknown():
    result = run(make(ProcessCheck))
    assert result.status is Status.UNKNOWN
    assert "neither process_name nor cmdline" in result.summary


def test_process_invalid_regex_rejected_by_options():
    with pytest.raises(ValidationError, match="invalid regular expression"):
        make(ProcessCheck, cmdline="celery[")


# --- file -------------------------------------------------------------------------------------

@pytest.fixture
def old_file(tmp_path: Path) -> Path:
    path = tmp_path / "backup.dump"
    path.write_bytes(b"x" * 2048)
    two_hours_ago = time.time() - 2 * 3600
    os.utime(path, (two_hours_ago, two_hours_ago))
    return path


def test_file_old_mtime_reports_age(old_file):
    check = make(FileCheck, path=str(old_file))
    result = run(check)
    assert result.status is Status.OK
    assert only(result, "exists") == 1
    assert only(result, "size_bytes") == 2048
    assert only(result, "age_seconds") == pytest.approx(7200, abs=5)
    assert result.summary == f"{old_file} modified 2h ago, 2.0KiB"


def test_file_age_uses_injected_wall_clock(old_file):
    mtime = old_file.stat().st_mtime
    result = run(make(FileCheck, path=str(old_file)), wall=lambda: mtime + 93600)
    assert only(result, "age_seconds") == pytest.approx(93600)


def test_file_older_than_warning_is_warning_naming_age(old_file):
    check = make(FileCheck, path=str(old_file), warning="1h", critical="26h")
    v = verdict(check, run(check))
    assert v.status is Status.WARNING
    assert v.summary.startswith("age_seconds 2h > 1h — ")


def test_file_older_than_critical_is_critical(old_file):
    check = make(FileCheck, path=str(old_file), warning="30m", critical="1h")
    assert verdict(check, run(check)).status is Status.CRITICAL


def test_file_modified_in_future_has_zero_age(tmp_path):
    path = tmp_path / "future"
    path.touch()
    later = time.time() + 3600
    os.utime(path, (later, later))
    assert only(run(make(FileCheck, path=str(path))), "age_seconds") == 0


@pytest.mark.parametrize(("missing", "status"), [
    (None, Status.CRITICAL), ("critical", Status.CRITICAL), ("warning", Status.WARNING),
    ("unknown", Status.UNKNOWN), ("ok", Status.OK)])
def test_file_missing_is_configured_status(tmp_path, missing, status):
    path = str(tmp_path / "never-written")
    options = {"path": path} if missing is None else {"path": path, "missing": missing}
    check = make(FileCheck, **options, warning="1h")
    result = run(check)
    assert result.status is status
    assert result.summary == f"{path} does not exist"
    assert values(result, "exists") == {(): 0}
    assert values(result, "age_seconds") == {}
    assert verdict(check, result).status is status


def test_file_missing_status_outside_choices_rejected():
    with pytest.raises(ValidationError):
        make(FileCheck, path="/tmp/x", missing="page")


def test_file_below_min_size_is_critical(old_file):
    result = run(make(FileCheck, path=str(old_file), min_size="4KiB"))
    assert result.status is Status.CRITICAL
    assert "2048 bytes, below the minimum 4096" in result.summary
    assert only(result, "size_bytes") == 2048


def test_file_at_or_above_min_size_is_ok(old_file):
    assert run(make(FileCheck, path=str(old_file), min_size="2KiB")).status is Status.OK
    assert run(make(FileCheck, path=str(old_file), min_size=1)).status is Status.OK


def test_file_empty_with_min_size_one_byte_is_critical(tmp_path):
    path = tmp_path / "empty.dump"
    path.touch()
    assert run(make(FileCheck, path=str(path), min_size=1)).status is Status.CRITICAL


# --- metric contract --------------------------------------------------------------------------

NAGIOS_LOAD = "/usr/lib/nagios/plugins/check_load"


HOST_TYPES = ("cpu", "memory", "swap", "load", "disk", "network_latency", "process", "file", "nagios")


def minimal_options(check_type: str, tmp_path: Path, port: int) -> dict:
    """The smallest valid options per host type whose run produces samples on this host (server-backed
    families assert their contract against real servers in their own modules)."""
    (tmp_path / "f").write_text("x")
    return {
        "cpu": {}, "memory": {}, "swap": {}, "load": {},
        "disk": {"mounts": ["/"]},
        "network_latency": {"targets": [f"127.0.0.1:{port}"], "attempts": 1},
        "process": {"cmdline": "."},
        "file": {"path": str(tmp_path / "f")},
        "nagios": {"command": [NAGIOS_LOAD, "-w", "99,99,99", "-c", "99,99,99"]},
    }[check_type]


@pytest.mark.parametrize("check_type", HOST_TYPES)
def test_check_type_samples_use_only_declared_metrics_and_labels(check_type, tmp_path, listener):
    cls = CHECK_TYPES[check_type]
    if check_type == "nagios" and not os.access(NAGIOS_LOAD, os.X_OK):
        pytest.skip(f"{NAGIOS_LOAD} missing (install monitoring-plugins-basic)")
    check = cls(cls.Options.model_validate(
        {"name": "contract", "type": check_type, **minimal_options(check_type, tmp_path, listener)}))
    result = check.run(CheckContext(timeout=5.0))
    assert result.status is Status.OK, result.summary
    assert result.samples, "a healthy run reports samples"
    declared = {m.name: m for m in cls.METRICS}
    for s in result.samples:
        assert s.name in declared, f"{check_type}: undeclared sample {s.name}"
        assert tuple(k for k, _ in s.labels) == tuple(sorted(declared[s.name].labels)), \
            f"{check_type}: {s.key} has labels other than {declared[s.name].labels}"
        assert s.labels == tuple(sorted(s.labels))
    if cls.THRESHOLD is not None:
        assert set(cls.THRESHOLD.metrics) <= set(declared)
