"""Atomic writes leave either the old file or the complete new one, with ordinary permissions."""
import os
import stat

import pytest

from stcm.atomic import atomic_path, atomic_write_bytes


def test_written_file_gets_the_usual_permissions(tmp_path):
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"abc")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
