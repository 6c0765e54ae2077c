"""What /proc says, read in one place: a process's start time (/proc/<pid>/stat), the CPU
(/proc/cpuinfo)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import proc_stat
import scratch

# The worker's hosts (RunPod's, CI's) are Linux; elsewhere there is no /proc, and the worker does
# without what it says (process_age is None, the compiled blocks' key names no CPU).
pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(),
                                reason="no /proc on this system: what it says is read on Linux only")


def test_start_ticks_reads_field_22_after_a_command_name_with_spaces_and_parentheses(tmp_path):
    named = tmp_path / "a (b) c"
    named.symlink_to(sys.executable)
    child = subprocess.Popen([str(named), "-c", "import time; time.sleep(30)"])
    try:
        line = Path(f"/proc/{child.pid}/stat").read_text()
        assert "(a (b) c)" in line
        assert proc_stat.start_ticks(child.pid) == int(line.rsplit(")", 1)[1].split()[19])
        assert scratch.process_identity(child.pid) == f"{child.pid}-{proc_stat.start_ticks(child.pid)}"
    finally:
        child.kill()
        child.wait()
    assert scratch.process_identity(child.pid) == ""  # gone: no identity
    with pytest.raises(OSError):
        proc_stat.start_ticks(child.pid)


def test_self_is_this_process():
    assert proc_stat.start_ticks("self") == proc_stat.start_ticks(os.getpid())


def test_first_cpu_is_the_first_processor_s_fields():
    text = Path("/proc/cpuinfo").read_text()
    first = proc_stat.first_cpu()
    assert first["processor"] == "0" and first and all(f"{key}\t" in text or f"{key}:" in text for key in first)
