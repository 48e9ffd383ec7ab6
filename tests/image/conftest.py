"""Tests inside the built image (`make test-image`): real containers, real signals.

A test that takes the `image` fixture needs a built image and a container engine, so plain
`pytest` (and `make test`) skips it: `make test-image` builds the image (cached by a hash of its
inputs) and names it in THAW_TEST_IMAGE.
"""

from __future__ import annotations

import os

import pytest

from infra.image.engine import Engine, detect


@pytest.fixture(scope="session")
def image() -> str:
    name = os.environ.get("THAW_TEST_IMAGE")
    if not name:
        pytest.skip("needs a built image: run `make test-image`")
    return name


@pytest.fixture(scope="session")
def engine(image: str) -> Engine:
    return detect()
