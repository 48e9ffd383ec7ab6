"""Processes from /proc: a server's model worker, a Lambda environment's processes, a state."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name: state, ppid, pgrp, ..."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _pids_where(index: int, value: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(entry.name)
            if fields is not None and int(fields[index]) == value:
                found.append(int(entry.name))
    return found


def child_pids(pid: int) -> list[int]:
    """Live processes whose parent is `pid`."""
    return _pids_where(1, pid)


def group_pids(pgid: int) -> list[int]:
    """Processes in the process group `pgid`."""
    return _pids_where(2, pgid)


def state(pid: int) -> str:
    """The kernel's one-letter state ("T" stopped, "Z" zombie), or "X" once gone."""
    fields = _stat(pid)
    return "X" if fields is None else fields[0]


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie may wait for a PID 1 that never reaps)."""
    return state(pid) not in ("X", "Z")


def run_python(code: str, env: dict[str, str] | None = None) -> str:
    """Run `code` in a fresh interpreter at the project's root; its stdout (raises if it fails)."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    return result.stdout
