"""cleanup_files on real temporary trees: only old matching files under the roots go.

The operator story (seed 004 "disk > 90 % → clean up", seed 003 "data first"):
old log rotations and dumps are removed oldest first within the per-run limits,
the newest backups of each directory stay however old, and nothing outside the
configured roots is touched — not through a symlinked file, a symlinked
directory, a directory swapped for a symlink mid-run, a symlink in the root's
own path (refused at config check, and at run time when swapped in after the
config was loaded), a bind mount of the same filesystem below the root, nor a
file named like an option. The tests run as root: real bind mounts (skipped
where mounting is not permitted), and chmod 000 does not stop reading, so the
unreadable-directory case runs the action in a forked child that has switched
to the `nobody` user.
"""

from __future__ import annotations

import gzip
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

import actions.mounts
from actions.base import ActionContext
from actions.files import CleanupFilesAction, Walk, _Skip
from agent.config.load import load_config
from agent.config.yamlsrc import ConfigError

DAY = 86400.0
NOW = time.time()


def make(**options) -> CleanupFilesAction:
    options = {"name": "cleanup", "type": "cleanup_files", "patterns": ["*.log.*", "*.dump", "-rf"],
               "older_than": "7d", **options}
    return CleanupFilesAction(CleanupFilesAction.Options.model_validate(options))


def put(path: Path, age_days: float, data: bytes = b"x" * 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (NOW - age_days * DAY,) * 2)
    return path


def link(path: Path, target: Path, age_days: float = 30) -> Path:
    path.symlink_to(target)
    os.utime(path, (NOW - age_days * DAY,) * 2, follow_symlinks=False)
    return path


def files(root: Path) -> set[str]:
    """Every entry under root (relative), symlinks not followed."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def tree(tmp_path: Path):
    """root/ with old and fresh files, a `-rf`, symlinks out of the root, and outside/ next to it."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    put(outside / "victim.log.1", 30)
    put(outside / "deep" / "victim.dump", 30)
    put(root / "app.log.1", 30)
    put(root / "app.log.2", 20)
    put(root / "app.log.3", 1)                         # fresh: stays
    put(root / "notes.txt", 30)                        # old, not matching: stays
    put(root / "-rf", 30)                              # a name like an option: just an old file
    put(root / "sub" / "db.dump", 10)
    put(root / "sub" / "db-new.dump", 0.5)
    (root / "dir.log.1").mkdir()                       # a directory matching the glob: never removed
    os.utime(root / "dir.log.1", (NOW - 30 * DAY,) * 2)
    link(root / "link.log.1", outside / "victim.log.1")    # symlink to a file outside: skipped, reported
    link(root / "linked-dir", outside)                     # symlinked directory: never entered
    return root, outside


@pytest.fixture
def bind_mount():
    """`bind(source, target)` bind-mounts for one test; every mount is undone afterwards, even on failure."""
    if shutil.which("mount") is None:
        pytest.skip("mount(8) missing (package mount)")
    mounted: list[Path] = []

    def bind(source: Path, target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot bind-mount here: {done.stderr.strip()}")
        mounted.append(target)

    yield bind
    for target in reversed(mounted):
        if subprocess.run(["umount", str(target)]).returncode != 0:
            subprocess.run(["umount", "--lazy", str(target)], check=True)


def test_cleanup_removes_only_old_matching_files_under_the_root(tree):
    root, outside = tree
    before_outside = files(outside)
    result = make(roots=[str(root)]).execute(ActionContext(30))
    assert result.ok, result.summary
    assert files(root) == {"app.log.3", "notes.txt", "sub", "sub/db-new.dump", "dir.log.1", "link.log.1",
                           "linked-dir"}
    assert files(outside) == before_outside                   # symlink targets survive
    assert (root / "link.log.1").is_symlink() and (root / "linked-dir").is_symlink()
    assert sorted(result.details["files"]) == sorted(str(root / p) for p in
                                                     ("app.log.1", "app.log.2", "-rf", "sub/db.dump"))
    assert result.details["bytes"] == 400
    assert result.summary.startswith(f"removed 4 files (400B) under {root}")
    assert sorted(result.details["symlinks_outside_root"]) == [str(root / "link.log.1"), str(root / "linked-dir")]
    assert "2 symlinks pointing outside the root skipped" in result.summary


def test_cleanup_dry_run_lists_what_would_go_and_removes_nothing(tree):
    root, _ = tree
    before = files(root)
    result = make(roots=[str(root)], dry_run=True).execute(ActionContext(30, dry_run=True))
    assert result.ok and result.summary.startswith("would remove 4 files")
    assert len(result.details["files"]) == 4 and str(root / "-rf") in result.details["files"]
    assert files(root) == before


def test_cleanup_not_recursive_leaves_subdirectories(tree):
    root, _ = tree
    result = make(roots=[str(root)], recursive=False).execute(ActionContext(30))
    assert result.ok and (root / "sub" / "db.dump").exists() and not (root / "app.log.1").exists()


def test_cleanup_max_files_takes_the_oldest_first(tmp_path):
    for age in (10, 20, 30, 40, 50):
        put(tmp_path / f"r/app.log.{age}", age)
    result = make(roots=[str(tmp_path / "r")], max_files=2).execute(ActionContext(30))
    assert result.ok and result.details["limit_reached"] == "max_files"
    assert files(tmp_path / "r") == {"app.log.10", "app.log.20", "app.log.30"}


def test_cleanup_max_bytes_stops_before_passing_the_limit(tmp_path):
    for age in (10, 20, 30, 40):
        put(tmp_path / f"r/app.log.{age}", age, b"y" * 100)
    result = make(roots=[str(tmp_path / "r")], max_bytes=250).execute(ActionContext(30))
    assert result.ok and result.details["limit_reached"] == "max_bytes" and result.details["bytes"] == 200
    assert files(tmp_path / "r") == {"app.log.10", "app.log.20"}


def test_cleanup_keep_newest_keeps_the_last_backups_of_each_directory(tmp_path):
    for folder in ("a", "b"):
        for age in (10, 20, 30, 40):
            put(tmp_path / f"r/{folder}/nightly-{age}.dump", age)
    put(tmp_path / "r/c/only.dump", 90)                 # the one backup of c stays however old
    result = make(roots=[str(tmp_path / "r")], keep_newest=2).execute(ActionContext(30))
    assert result.ok
    assert files(tmp_path / "r") == {"a", "b", "c", "a/nightly-10.dump", "a/nightly-20.dump",
                                     "b/nightly-10.dump", "b/nightly-20.dump", "c/only.dump"}
    assert result.details["kept_newest"] == 5


def test_cleanup_compress_gzips_in_place_and_keeps_the_age(tmp_path):
    text = b"GET /api/v1/cameras 200\n" * 2000
    original = put(tmp_path / "r/access.log.1", 30, text)
    done_before = put(tmp_path / "r/access.log.2.gz", 30, b"already")
    result = make(roots=[str(tmp_path / "r")], mode="compress").execute(ActionContext(30))
    assert result.ok, result.summary
    packed = tmp_path / "r/access.log.1.gz"
    assert not original.exists() and gzip.decompress(packed.read_bytes()) == text
    assert abs(packed.stat().st_mtime - (NOW - 30 * DAY)) < 1
    assert done_before.read_bytes() == b"already"
    assert result.summary.startswith("compressed 1 file, freed ") and result.details["bytes"] > 40000


def test_cleanup_compress_never_overwrites_an_existing_gz(tmp_path):
    put(tmp_path / "r/access.log.1", 30, b"new data")
    put(tmp_path / "r/access.log.1.gz", 1, b"older archive")
    result = make(roots=[str(tmp_path / "r")], mode="compress").execute(ActionContext(30))
    assert not result.ok and "already exists" in result.summary
    assert (tmp_path / "r/access.log.1").read_bytes() == b"new data"
    assert (tmp_path / "r/access.log.1.gz").read_bytes() == b"older archive"


def test_cleanup_directory_swapped_for_a_symlink_after_the_walk_is_not_followed(tree):
    root, outside = tree
    action = make(roots=[str(root)])
    walk, cutoff = Walk(), NOW - 7 * DAY
    action._walk_root(str(root), cutoff, walk, ActionContext(30), time.monotonic())
    chosen = next(c for c in walk.candidates if c.parts == ("sub",))
    shutil.rmtree(root / "sub")
    (root / "sub").symlink_to(outside / "deep")         # same name inside: deep/db.dump would be the victim
    put(outside / "deep" / "db.dump", 10)
    with pytest.raises(_Skip, match="symlink is never followed"):
        action._dispose(chosen, cutoff, ActionContext(30), time.monotonic())
    assert (outside / "deep" / "db.dump").exists()


def test_cleanup_file_replaced_after_the_walk_is_left_alone(tmp_path):
    put(tmp_path / "r/app.log.1", 30)
    action = make(roots=[str(tmp_path / "r")])
    walk, cutoff = Walk(), NOW - 7 * DAY
    action._walk_root(str(tmp_path / "r"), cutoff, walk, ActionContext(30), time.monotonic())
    (tmp_path / "r/app.log.1").unlink()
    put(tmp_path / "r/app.log.1", 30, b"a new file under the old name")
    with pytest.raises(_Skip, match="replaced"):
        action._dispose(walk.candidates[0], cutoff, ActionContext(30), time.monotonic())
    assert (tmp_path / "r/app.log.1").exists()


def test_cleanup_root_that_is_a_symlink_is_rejected(tree, tmp_path):
    _, outside = tree
    link(tmp_path / "root-link", outside)
    with pytest.raises(ValidationError, match=f"root '{tmp_path}/root-link' is a symlink"):
        make(roots=[str(tmp_path / "root-link")])


def test_cleanup_root_below_a_symlink_is_rejected_at_config_check_with_its_location(tmp_path, write_config):
    (tmp_path / "real" / "logs").mkdir(parents=True)
    (tmp_path / "data").symlink_to(tmp_path / "real")          # /srv/data -> /mnt/real, say
    config = write_config(f"""
        actions:
          - name: clean-logs
            type: cleanup_files
            roots:
              - {tmp_path}/real/app
              - {tmp_path}/data/logs
            patterns: ["*.log.*"]
            older_than: 7d
        """)
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    [issue] = caught.value.issues
    assert (issue.line, issue.path) == (6, "actions[0].roots[1]"), str(issue)
    assert f"goes through the symlink {tmp_path}/data (→ {tmp_path}/real)" in issue.message
    assert f"name the real directory ({tmp_path}/real/logs)" in issue.message


@pytest.mark.parametrize("swapped", ["ancestor", "root"])
def test_cleanup_symlink_swapped_into_the_root_path_after_load_is_refused(tmp_path, swapped):
    """The config was checked while the path was real; then a directory of it became a symlink to a tree
    with the same layout (the victim). The run must refuse, not clean the victim."""
    root = tmp_path / "srv" / "app" / "logs"
    put(root / "app.log.1", 30)
    action = make(roots=[str(root)])                          # loaded: no symlink yet
    victim = tmp_path / "victim"
    put(victim / "app" / "logs" / "app.log.1", 30)
    put(victim / "logs" / "app.log.1", 30)
    moved = root.parent if swapped == "ancestor" else root
    moved.rename(moved.with_name(moved.name + ".old"))
    moved.symlink_to(victim / moved.name)                     # victim/app (holding logs/) or victim/logs
    result = action.execute(ActionContext(30))
    assert not result.ok
    expected = f"{root.parent} is a symlink (never followed)" if swapped == "ancestor" else "is a symlink"
    assert f"cannot open root {root}: {expected}" in result.summary, result.summary
    assert (victim / "app" / "logs" / "app.log.1").exists() and (victim / "logs" / "app.log.1").exists()
    assert result.details["files"] == []


def test_cleanup_ancestor_swapped_for_a_symlink_between_walk_and_removal_is_refused(tmp_path):
    root = tmp_path / "srv" / "logs"
    put(root / "app.log.1", 30)
    action = make(roots=[str(root)])
    walk, cutoff = Walk(), NOW - 7 * DAY
    action._walk_root(str(root), cutoff, walk, ActionContext(30), time.monotonic())
    (tmp_path / "srv").rename(tmp_path / "elsewhere")
    (tmp_path / "srv").symlink_to(tmp_path / "elsewhere")       # the very same files, reached through a link
    with pytest.raises(_Skip, match=f"root: {tmp_path}/srv is a symlink"):
        action._dispose(walk.candidates[0], cutoff, ActionContext(30), time.monotonic())
    assert (tmp_path / "elsewhere" / "logs" / "app.log.1").exists()


@pytest.mark.parametrize("source", ["statx", "fdinfo"])
def test_cleanup_never_enters_a_bind_mount_of_the_same_filesystem(tmp_path, bind_mount, monkeypatch, source):
    """Another service's directory bind-mounted below the root: same st_dev, another mount ID."""
    if source == "fdinfo":                     # the fallback for kernels before 5.8
        monkeypatch.setattr(actions.mounts, "statx_mount_id", lambda fd: None)
    elsewhere, root = tmp_path / "elsewhere", tmp_path / "root"
    put(elsewhere / "other.log.1", 30)
    put(elsewhere / "deep" / "other.dump", 30)
    put(root / "app.log.1", 30)
    bind_mount(elsewhere, root / "shared")
    assert os.stat(root / "shared").st_dev == os.stat(root).st_dev      # what st_dev cannot see
    dry = make(roots=[str(root)], dry_run=True).execute(ActionContext(30, dry_run=True))
    assert dry.details["files"] == [str(root / "app.log.1")]
    assert dry.details["mount_points"] == [f"{root / 'shared'}: skipped: mount point"]
    result = make(roots=[str(root)]).execute(ActionContext(30))
    assert result.ok and "1 mount points skipped" in result.summary, result.summary
    assert result.details["files"] == [str(root / "app.log.1")]
    assert files(elsewhere) == {"other.log.1", "deep", "deep/other.dump"}


def test_cleanup_directory_becoming_a_mount_point_after_the_walk_is_left_alone(tmp_path, bind_mount):
    root = tmp_path / "root"
    put(root / "sub" / "db.dump", 30)
    action = make(roots=[str(root)])
    walk, cutoff = Walk(), NOW - 7 * DAY
    action._walk_root(str(root), cutoff, walk, ActionContext(30), time.monotonic())
    bind_mount(root / "sub", root / "sub")       # the same files, now behind a mount (as ReadWritePaths= does)
    with pytest.raises(_Skip, match="'sub' is now a mount point"):
        action._dispose(walk.candidates[0], cutoff, ActionContext(30), time.monotonic())
    assert (root / "sub" / "db.dump").exists()


def test_cleanup_without_a_mount_id_refuses_the_root(tmp_path, monkeypatch):
    monkeypatch.setattr(actions.mounts, "statx_mount_id", lambda fd: None)
    monkeypatch.setattr(actions.mounts, "fdinfo_mount_id", lambda fd: None)
    put(tmp_path / "r/app.log.1", 30)
    result = make(roots=[str(tmp_path / "r")]).execute(ActionContext(30))
    assert not result.ok and "cannot tell its mount points apart" in result.summary
    assert (tmp_path / "r/app.log.1").exists()


def test_mount_id_from_statx_and_fdinfo_agree(tmp_path):
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        from_statx = actions.mounts.statx_mount_id(fd)
        if from_statx is None:
            pytest.skip("statx STATX_MNT_ID unavailable (Linux before 5.8 or libc without statx)")
        assert from_statx == actions.mounts.fdinfo_mount_id(fd)
    finally:
        os.close(fd)


def test_cleanup_missing_root_is_a_failure(tmp_path):
    result = make(roots=[str(tmp_path / "gone")]).execute(ActionContext(30))
    assert not result.ok and "No such file or directory" in result.summary


def test_cleanup_unreadable_directory_is_skipped_and_reported():
    """As `nobody` in a forked child: root would read a chmod 000 directory anyway."""
    nobody = pwd.getpwnam("nobody")
    base = Path(tempfile.mkdtemp(prefix="maint-cleanup-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        put(base / "r/app.log.1", 30)
        put(base / "r/locked/app.log.2", 30)
        for path in (base / "r", base / "r/app.log.1", base / "r/locked", base / "r/locked/app.log.2"):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        os.chmod(base / "r/locked", 0)
        action = make(roots=[str(base / "r")])
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:   # the child: drop to nobody, run, report, exit without pytest's cleanup
            try:
                os.close(reader)
                os.setgroups([])
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
                result = action.execute(ActionContext(30))
                os.write(writer, json.dumps({"ok": result.ok, "summary": result.summary,
                                             "details": result.details}).encode())
            finally:
                os._exit(0)
        os.close(writer)
        with os.fdopen(reader, "rb") as pipe:
            outcome = json.loads(pipe.read() or b"{}")
        os.waitpid(pid, 0)
        assert outcome["ok"], outcome
        assert outcome["details"]["unreadable"] == [f"{base / 'r/locked'}: Permission denied"]
        assert "1 unreadable directories skipped" in outcome["summary"]
        assert not (base / "r/app.log.1").exists()
        os.chmod(base / "r/locked", 0o755)
        assert (base / "r/locked/app.log.2").exists()
    finally:
        os.chmod(base / "r/locked", 0o755)
        shutil.rmtree(base)


@pytest.mark.parametrize("root", ["/", "/etc", "/usr", "/var", "/home", "/lib64", "/lib", "/var/", "/var/log/..", "//", "//etc", "/./var", "///usr",
                                  "relative/dir"])
def test_cleanup_root_that_is_a_system_directory_is_rejected(root):
    with pytest.raises(ValidationError):
        make(roots=[root])


def test_cleanup_overlapping_roots_are_rejected():
    with pytest.raises(ValidationError, match="overlap"):
        make(roots=["/var/log/app", "/var/log/app/old"])


def test_cleanup_subdirectory_of_a_system_directory_is_accepted():
    assert make(roots=["/var/log/app", "/var/backups/pg/"]).options.roots == ("/var/log/app", "/var/backups/pg")


def test_cleanup_pattern_with_a_slash_is_rejected():
    with pytest.raises(ValidationError, match="without '/'"):
        make(roots=["/var/log/app"], patterns=["../*.log"])
