"""Shared fixtures: the tiny model, built once into the cache if missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "infra" / "scripts"))

import build_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The embedded default model's folder (built by `make model`; built here if missing)."""
    out = build_tiny_model.default_output()
    if not (out / build_tiny_model.MARKER).exists():
        subprocess.run(
            [sys.executable, str(ROOT / "infra/scripts/build_tiny_model.py"), "--out", str(out)],
            check=True,
            timeout=600,
        )
    return out
