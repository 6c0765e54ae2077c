"""Job scratch directories on their own, no model: made and removed whatever the job does, refused
on a nearly full disk, and swept only when the worker that made them is gone."""

import os
import shutil
import subprocess
import sys
import time
from collections import namedtuple

import pytest

import scratch
from errors import DiskSpaceError, WorkerSetupError


def test_a_job_directory_is_made_under_the_root_and_removed_after_the_job(tmp_path):
    root = tmp_path / "jobs" / "deeper"  # made when missing
    with scratch.job_directory(root, "job-1", min_free_mb=0) as path:
        assert path.is_dir() and path.parent == root
        match = scratch.JOB_DIR.fullmatch(path.name)
        assert path.name.startswith("f5job-job-1.") and match["process"] == scratch.process_identity(os.getpid())
        (path / "voice").write_bytes(b"a caller's recording")
        (path / "sub").mkdir()
        (path / "sub" / "out.wav").write_bytes(b"RIFF")
    assert not path.exists() and list(root.iterdir()) == []


def test_a_job_directory_is_removed_when_the_job_fails(tmp_path):
    with pytest.raises(RuntimeError, match="the job failed"):
        with scratch.job_directory(tmp_path, "job-2", min_free_mb=0) as path:
            (path / "voice").write_bytes(b"a caller's recording")
            raise RuntimeError("the job failed")
    assert not path.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(KeyboardInterrupt):  # whatever ends the job
        with scratch.job_directory(tmp_path, "job-3", min_free_mb=0):
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_two_jobs_of_one_id_get_directories_of_their_own(tmp_path):
    with scratch.job_directory(tmp_path, "same", 0) as a, scratch.job_directory(tmp_path, "same", 0) as b:
        assert a != b and a.is_dir() and b.is_dir()
    assert list(tmp_path.iterdir()) == []


def test_too_little_free_disk_is_refused_before_anything_is_made(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * 2**30, 10 * 2**30 - 150 * 2**20, 150 * 2**20))
    with pytest.raises(DiskSpaceError) as raised:
        with scratch.job_directory(tmp_path, "job", min_free_mb=200):
            pytest.fail("the job ran")
    assert raised.value.message == (f"Only 150 MB free in {tmp_path}; the job needs 200 MB of scratch space "
                                    "(JOB_TMP_DIR).")
    assert raised.value.refresh_worker and list(tmp_path.iterdir()) == []
    with scratch.job_directory(tmp_path, "job", min_free_mb=150):  # exactly enough is enough
        pass


def test_a_root_that_cannot_be_made_names_the_setting(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(WorkerSetupError) as raised:
        with scratch.job_directory(tmp_path / "file" / "jobs", "job", min_free_mb=0):
            pytest.fail("the job ran")
    assert raised.value.message.startswith("The job's scratch directory could not be written to ")
    assert "(JOB_TMP_DIR)" in raised.value.message


def a_gone_pid() -> int:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


def test_the_sweep_removes_only_what_dead_or_restarted_workers_left(tmp_path, caplog):
    root = tmp_path / "jobs"
    root.mkdir()
    mine = scratch.process_identity(os.getpid())
    parent = scratch.process_identity(os.getppid())
    dirs = {
        "dead": root / f"f5job-dead.{a_gone_pid()}-1234.abc",
        "restarted": root / f"f5job-restarted.{os.getpid()}-1.abc",  # our id, another start time
        "ancient": root / f"f5job-ancient.{mine}.abc",  # alive, but older than a day
        "mine": root / f"f5job-mine.{mine}.abc",
        "parent": root / f"f5job-parent.{parent}.abc",
        "unnamed": root / "f5job-legacy",  # no process in its name: kept until it is a day old
    }
    for path in dirs.values():
        path.mkdir()
        (path / "voice.wav").write_bytes(b"a caller's recording")
    day_ago = time.time() - scratch.STALE_AFTER_SECONDS - 60
    os.utime(dirs["ancient"], (day_ago, day_ago))
    (root / "not-a-job").mkdir()  # what others keep in JOB_TMP_DIR is never touched, however old
    (root / "notes.txt").write_text("mine")
    os.utime(root / "not-a-job", (day_ago, day_ago))

    with caplog.at_level("WARNING", logger="f5worker.scratch"):
        assert scratch.sweep_job_directories(root) == 3
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [dirs["mine"].name, dirs["parent"].name, dirs["unnamed"].name, "not-a-job", "notes.txt"])
    assert "removed 3 job directories" in caplog.text
    caplog.clear()
    assert scratch.sweep_job_directories(root) == 0 and caplog.text == ""  # nothing to say, nothing said
    assert scratch.sweep_job_directories(tmp_path / "missing") == 0


def test_process_identity_is_the_pid_and_its_start_time():
    pid, started = scratch.process_identity(os.getpid()).split("-")
    assert int(pid) == os.getpid() and started.isdigit()
    assert scratch.process_identity(os.getpid()) == scratch.process_identity(os.getpid())
    assert scratch.process_identity(a_gone_pid()) == ""
