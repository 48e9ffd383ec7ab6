"""Outside review of issue 19's one-core start (handler/early.py): `python -m handler` pinned to
one CPU, where the early model worker is held until the server listens.

- The port is taken: uvicorn cannot bind, so nothing releases the held worker. The process
  must exit at once with uvicorn's failure status and leave no worker behind.
- THAW_PRELOAD=eager: the server listens only after the load, so a held worker would wait for
  a listener that waits for it. It is never held; the server becomes ready.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.families import built
from tests.support.server import ROOT, free_port


def one_cpu() -> None:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def workers_of(pid: int) -> list[int]:
    """Model workers started by `pid` (runtime.worker's argv names its parent's pid)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # python -m runtime.worker FD LOAD_REF PARENT_PID [HOLD_S]
        if argv[1:3] == [b"-m", b"runtime.worker"] and argv[5:6] == [str(pid).encode()]:
            found.append(int(entry.name))
    return found


def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "handler"],
            cwd=ROOT,
            env={**os.environ, "THAW_MODEL": str(built("sd")), "THAW_HOST": "127.0.0.1", **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=one_cpu,
        )


def test_a_port_in_use_ends_the_process_and_its_held_worker(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        log = tmp_path / "server.log"
        proc = start({"THAW_PORT": str(port), "THAW_PRELOAD": "background"}, log)
        try:
            code = proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        assert code != 0, log.read_text()
        assert "address already in use" in log.read_text()
    deadline = time.monotonic() + 10
    while workers_of(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workers_of(proc.pid) == []


def test_an_eager_preload_on_one_cpu_is_not_held(tmp_path: Path) -> None:
    port = free_port()
    proc = start({"THAW_PORT": str(port), "THAW_PRELOAD": "eager"}, tmp_path / "server.log")
    try:
        deadline = time.monotonic() + 120
        ready = False
        while not ready and time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                time.sleep(0.1)
        assert ready, (tmp_path / "server.log").read_text()[-3000:]
        assert workers_of(proc.pid)  # the model is in its worker
        assert "worker released by its time limit" not in (tmp_path / "server.log").read_text()
    finally:
        proc.terminate()
        proc.wait(30)
    assert workers_of(proc.pid) == []
