"""One real S3 API server (moto, over HTTP on loopback) for the tests of models kept in S3."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.s3_server import S3Server, upload_folder

BUCKET = "models"
_names = itertools.count()


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    log = tmp_path_factory.mktemp("s3") / "server.log"
    server = S3Server(log).start()
    server.client().create_bucket(Bucket=BUCKET)
    yield server
    server.stop()


@pytest.fixture
def s3_model(s3: S3Server, tiny_model: Path) -> str:
    """A fresh copy of the tiny model under its own prefix: `s3://models/tiny-N`."""
    prefix = f"tiny-{next(_names)}"
    upload_folder(s3.client(), tiny_model, BUCKET, prefix)
    return f"s3://{BUCKET}/{prefix}"


def key_of(ref: str, relpath: str) -> tuple[str, str]:
    bucket, _, prefix = ref.removeprefix("s3://").partition("/")
    return bucket, f"{prefix}/{relpath}"


def object_gets(requests: list[str]) -> list[Any]:
    """The object downloads among the server's requests (listings excluded)."""
    return [r for r in requests if r.startswith("GET ") and not r.endswith("?list")]
