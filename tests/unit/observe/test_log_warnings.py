"""Python's `warnings` (diffusers' and transformers' deprecations, torch's UserWarnings) go
through the log like any other record: in JSON mode they must not reach stderr as raw text
(`path:line: FutureWarning: ...` and the source line), which a log pipeline cannot parse.

Each case runs in a fresh interpreter: capturing warnings changes process-wide state.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = """
import sys, warnings
from runtime.observe.logs import configure_logging
from runtime.settings import LogFormat
configure_logging("info", LogFormat[sys.argv[1]])
warnings.warn("a deprecated thing", FutureWarning)
"""


def stderr_lines(log_format: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, log_format],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stderr.splitlines()


def test_a_python_warning_is_one_json_record() -> None:
    lines = stderr_lines("JSON")
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"a raw line in JSON mode: {line!r} (all: {lines})") from None
    (record,) = records
    assert record["level"] == "warning"
    assert "FutureWarning: a deprecated thing" in record["msg"]


def test_a_python_warning_is_a_warning_line_in_text() -> None:
    lines = stderr_lines("TEXT")
    assert lines, "the warning was not written at all"
    assert lines[0].startswith("WARNING:")
    assert "FutureWarning: a deprecated thing" in lines[0]


def test_a_captured_warning_leaves_no_empty_line() -> None:
    assert "" not in stderr_lines("TEXT")
    (line,) = stderr_lines("JSON")
    assert not json.loads(line)["msg"].endswith("\n")
