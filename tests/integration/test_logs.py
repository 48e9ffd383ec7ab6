"""Logs fit where they are read: JSON lines where a machine reads them (a pipe, a file: what a
container platform, CloudWatch, Cloud Logging or Loki collects), one readable line per event at a
terminal, `THAW_LOG_FORMAT` overriding either way. Model libraries print warnings and progress
bars of their own, in the worker process too; they must arrive in the same format or not at all,
and no event may be written twice (uvicorn and thaw both configure logging)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from tests.support.server import ROOT, ServerProcess

# uvicorn's own line style: `INFO:     message`, the level maybe coloured at a terminal.
TEXT_LINE = re.compile(r"^(\x1b\[[0-9;]*m)?(DEBUG|INFO|WARNING|ERROR|CRITICAL)(\x1b\[0m)?: +\S")
ESCAPE = "\x1b["
GENERATE = {"prompt": "a lighthouse", "num_inference_steps": 2, "width": 64, "height": 64}


class StreamedServer(ServerProcess):
    """`python -m handler` with stdout and stderr one pseudo-terminal (`tty=True`), as under
    `make serve` in a shell, or one pipe; a thread copies what arrives into the log file (a
    terminal or a pipe nobody reads would block the server once its buffer is full)."""

    def __init__(self, env: dict[str, str], *, tty: bool) -> None:
        super().__init__(env)
        self.tty = tty
        self._copier: threading.Thread | None = None

    def start(self) -> StreamedServer:
        reader, writer = os.openpty() if self.tty else os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=writer,
                stderr=writer,
            )
        finally:
            os.close(writer)
        self._copier = threading.Thread(target=self._copy, args=(reader,), daemon=True)
        self._copier.start()
        return self

    def _copy(self, reader: int) -> None:
        with self.log_path.open("ab") as log:
            while True:
                try:
                    chunk = os.read(reader, 65536)
                except OSError:  # a pty's reader raises EIO once every writer has gone
                    chunk = b""
                if not chunk:
                    break
                log.write(chunk)
                log.flush()
        os.close(reader)

    def stop(self, timeout: float = 30) -> int | None:
        code = super().stop(timeout)
        if self._copier is not None:
            self._copier.join(10)
        return code

    def lines(self) -> list[str]:
        return [line for line in self.log.splitlines() if line.strip()]


def run(env: dict[str, str], *, tty: bool, generate: bool) -> list[str]:
    server = StreamedServer(env, tty=tty).start()
    try:
        server.wait_live()
        if generate:
            server.wait_ready()
            assert server.post("/generate", json=GENERATE).status_code == 200
    finally:
        server.stop()
    lines = server.lines()
    assert lines, "the server wrote nothing"
    return lines


def not_json(lines: list[str]) -> list[str]:
    plain = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            plain.append(line)
    return plain


def assert_text(lines: list[str]) -> None:
    odd = [line for line in lines if not TEXT_LINE.match(line) and not line[:1].isspace()]
    assert odd == [], f"{len(odd)} of {len(lines)} lines are not text log lines: {odd[:5]}"
    inside_json = [line for line in lines if "{" in line and ESCAPE in line]
    assert inside_json == [], inside_json[:5]
    assert not any(line.lstrip().startswith('{"') for line in lines), lines[:5]


def assert_json(lines: list[str]) -> list[dict[str, object]]:
    plain = not_json(lines)
    assert plain == [], f"{len(plain)} of {len(lines)} lines are not JSON: {plain[:5]}"
    assert not any(ESCAPE in line or "\\u001b" in line for line in lines), [
        line for line in lines if ESCAPE in line or "\\u001b" in line
    ][:5]
    records = [json.loads(line) for line in lines]
    assert not any("color_message" in record for record in records)
    return records


def test_through_a_pipe_every_line_is_json_and_each_event_appears_once(tiny_model: Path) -> None:
    records = assert_json(run({"THAW_MODEL": str(tiny_model)}, tty=False, generate=True))
    events = Counter(
        (record["msg"], record.get("phase"))
        for record in records
        if record["logger"] != "thaw.http"  # one line per request, and the test polls /readyz
    )
    twice = {event: count for event, count in events.items() if count > 1}
    assert twice == {}, twice
    phases = {phase for (msg, phase) in events if msg == "load phase done"}
    assert {"worker_start", "import", "build"} <= phases, events
    for msg in ("model ready", "Application startup complete.", "model released"):
        assert events[(msg, None)] == 1, (msg, events)
    assert sum(1 for (msg, _) in events if str(msg).startswith("Uvicorn running on")) == 1
    assert [r for r in records if r.get("route") == "/generate" and r["status"] == 200]


def test_at_a_terminal_each_event_is_one_readable_line(tiny_model: Path) -> None:
    lines = run({"THAW_MODEL": str(tiny_model)}, tty=True, generate=True)
    assert_text(lines)
    plain = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in lines]
    assert sum("Uvicorn running on http://127.0.0.1:" in line for line in plain) == 1, plain
    assert sum("model ready" in line for line in plain) == 1, plain
    assert sum("load phase done" in line and "phase=import" in line for line in plain) == 1
    assert any(line.startswith("INFO:     ") for line in plain), plain[:5]
    assert any(ESCAPE in line for line in lines), "a terminal gets coloured levels"


@pytest.mark.parametrize(
    ("tty", "log_format"), [(True, "json"), (False, "text")], ids=["tty-json", "pipe-text"]
)
def test_THAW_LOG_FORMAT_overrides_what_the_stream_suggests(tty: bool, log_format: str) -> None:
    # Lazy preload: startup and shutdown without loading a model are enough here.
    env = {"THAW_PRELOAD": "lazy", "THAW_LOG_FORMAT": log_format}
    lines = run(env, tty=tty, generate=False)
    if log_format == "json":
        records = assert_json(lines)
        assert any(str(r["msg"]).startswith("Uvicorn running on") for r in records)
    else:
        assert_text(lines)
        assert not any(ESCAPE in line for line in lines), "colours only at a terminal"
        assert sum("Uvicorn running on" in line for line in lines) == 1, lines


def test_a_bad_THAW_LOG_FORMAT_stops_the_server_naming_it() -> None:
    server = StreamedServer({"THAW_PRELOAD": "lazy", "THAW_LOG_FORMAT": "yaml"}, tty=False)
    server.start()
    assert server.proc is not None
    try:
        code = server.wait_exit(60)
    finally:
        server.stop()
    assert code == 2  # a usage error, as a CLI's: the platform shows it, no traceback
    assert "THAW_LOG_FORMAT='yaml' must be one of: auto, text, json" in server.log
    assert "Traceback" not in server.log
    lines = server.log.strip().splitlines()
    assert len(lines) == 1, lines
    assert json.loads(lines[0])["level"] == "error"  # still a JSON line where JSON is read
