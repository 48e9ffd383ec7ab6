"""The image as GPU container platforms run it: uvicorn, probes, a generation, SIGTERM.

Each container uses the host's network and binds 127.0.0.1 only (THAW_HOST), so nothing is
published beyond loopback and no firewall rule is written.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from infra.image.engine import Engine
from tests.image.containers import (
    TINY_GENERATE,
    Container,
    StartTimeline,
    free_port,
    http_env,
    png_size,
    post_json,
    status_of,
    uid_of,
    watch_start,
)


@dataclass
class Served:
    container: Container
    url: str
    timeline: StartTimeline
    generate: tuple[int, str, bytes]


def serve(engine: Engine, image: str, options: list[str]) -> Iterator[Served]:
    port = free_port()
    container = Container(engine, image, http_env(port), ["--network", "host", *options])
    try:
        container.start()
        url = f"http://127.0.0.1:{port}"
        timeline = watch_start(url, container.started_at, alive=lambda: container.running)
        yield Served(container, url, timeline, post_json(f"{url}/generate", TINY_GENERATE))
    except BaseException:
        print(container.logs())
        raise
    finally:
        container.remove()


@pytest.fixture(scope="module")
def writable(engine: Engine, image: str) -> Iterator[Served]:
    """A container with the image's own writable layer, to see what it writes."""
    yield from serve(engine, image, [])


@pytest.fixture(scope="module")
def read_only(engine: Engine, image: str) -> Iterator[Served]:
    """How Lambda and hardened Kubernetes run it: a read-only root and a tmpfs /tmp."""
    yield from serve(engine, image, ["--read-only", "--tmpfs", "/tmp:rw,size=512m,mode=1777"])


def test_livez_answers_while_the_model_loads_then_readyz_turns_200(writable: Served) -> None:
    timeline = writable.timeline
    assert timeline.livez_s is not None
    assert timeline.readyz_s is not None
    # /livez answered while /readyz still said "not yet": the server listened before the load.
    assert timeline.livez_readyz_status == 503, timeline
    assert timeline.readyz_seen[-1] == 200
    assert set(timeline.readyz_seen[:-1]) <= {503}, timeline


def test_generate_answers_a_png(writable: Served) -> None:
    status, content_type, body = writable.generate
    assert status == 200, body[:500]
    assert content_type == "image/png"
    assert png_size(body) == (64, 64)


def test_the_playground_and_its_files_are_in_the_image(read_only: Served) -> None:
    # handler/static is not Python: only the COPY of handler/ (and .dockerignore) brings it.
    for path in ("/", "/playground/playground.js", "/playground/playground.css"):
        assert status_of(read_only.url + path) == 200, path


def test_the_server_runs_as_uid_10001(writable: Served) -> None:
    assert uid_of(writable.container.host_pid()) == 10001


def test_it_writes_nothing_outside_tmp(writable: Served) -> None:
    engine_own = set(writable.container.baseline_diff())
    changed = [
        line.split(maxsplit=1) for line in writable.container.diff() if line not in engine_own
    ]
    outside = [
        (kind, path) for kind, path in changed if path != "/tmp" and not path.startswith("/tmp/")
    ]
    assert outside == [], (changed, engine_own)


def test_every_log_line_is_json(writable: Served) -> None:
    lines = [line for line in writable.container.logs().splitlines() if line.strip()]
    assert lines
    not_json = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            not_json.append(line)
    assert not_json == []


def test_sigterm_drains_and_exits_0(writable: Served) -> None:
    code, took = writable.container.stop(grace_s=60)
    assert code == 0, writable.container.logs()[-3000:]
    # Well inside the grace period: SIGTERM was handled, not waited out by SIGKILL.
    assert took < 60


def test_a_read_only_root_with_a_tmpfs_tmp_still_starts_and_serves(read_only: Served) -> None:
    assert read_only.timeline.readyz_s is not None
    status, _, body = read_only.generate
    assert status == 200, body[:500]
    assert png_size(body) == (64, 64)
    code, _ = read_only.container.stop(grace_s=60)
    assert code == 0, read_only.container.logs()[-3000:]
