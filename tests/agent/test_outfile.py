"""Files written for the operator: private, complete or absent, never written through a link."""

import os

import pytest

from agent.plugin.outfile import replace_file


def test_replace_file_new_file_is_0600_whatever_the_umask(tmp_path):
    previous = os.umask(0o000)
    try:
        with replace_file(tmp_path / "out.csv") as out:
            out.write("a,b\n")
    finally:
        os.umask(previous)
    assert (tmp_path / "out.csv").read_text() == "a,b\n"
    assert oct((tmp_path / "out.csv").stat().st_mode & 0o777) == "0o600"


def test_replace_file_link_planted_while_writing_is_replaced_not_followed(tmp_path):
    """The link check happens before writing; a link raced in afterwards loses to the rename."""
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    target = tmp_path / "out.jsonl"
    with replace_file(target) as out:
        target.symlink_to(victim)
        out.write("{}\n")
    assert victim.read_text() == "keep\n"
    assert not target.is_symlink() and target.read_text() == "{}\n"


def test_replace_file_failure_leaves_target_and_no_temporary_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("previous\n")
    with pytest.raises(RuntimeError):
        with replace_file(target) as out:
            out.write("half")
            raise RuntimeError("cursor broke")
    assert target.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_replace_file_explicit_mode_for_files_another_user_reads(tmp_path):
    with replace_file(tmp_path / "targets.json", mode=0o644) as out:
        out.write("[]\n")
    assert oct((tmp_path / "targets.json").stat().st_mode & 0o777) == "0o644"
