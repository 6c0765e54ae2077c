"""Files on the volume are written whole or not at all."""

import os

import pytest

from atomic import temp_name, write_atomic


def test_a_file_is_replaced_whole_and_readable_by_all(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")
    seen = []

    def write(tmp):
        seen.append(target.read_bytes())  # readers still see the old file meanwhile
        tmp.write_bytes(b"new")
        os.chmod(tmp, 0o600)  # as safetensors creates its files

    write_atomic(target, write)
    assert seen == [b"old"] and target.read_bytes() == b"new"
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")

    def torn(tmp):
        tmp.write_bytes(b"ha")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, torn)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_the_temporary_name_is_hidden_beside_the_target_and_of_this_process(tmp_path):
    tmp = temp_name(tmp_path / "en-44136fa3")
    assert tmp.parent == tmp_path and tmp.name == f".en-44136fa3.{os.getpid()}.tmp"
