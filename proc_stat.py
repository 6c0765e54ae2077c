"""/proc (Linux), read in one place: when a process started (/proc/<pid>/stat), and what the CPU
is (/proc/cpuinfo)."""

from __future__ import annotations

from pathlib import Path


def start_ticks(pid: int | str = "self") -> int:
    """When process `pid` ("self": this one) started, in clock ticks after boot: field 22 of
    /proc/<pid>/stat, counted after the command name (which may hold spaces and parentheses).
    With its id it tells a process from a later one that reuses the id. OSError when there is no
    such process (or no /proc); ValueError or IndexError on a line it cannot read."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def first_cpu() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo ("model name", "flags", ...); {} without it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            first = info.read().split("\n\n", 1)[0]
    except OSError:
        return {}
    return {key.strip(): value.strip() for key, value in
            (line.split(":", 1) for line in first.splitlines() if ":" in line)}
