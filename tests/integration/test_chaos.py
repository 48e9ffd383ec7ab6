"""Chaos, bounded: a steady stream of requests while the model worker is SIGKILLed at random
moments. Every request is answered (none hangs, none is lost): 200, or 503 `model_lost` with
Retry-After for the one that was running at a kill; the process is ready again after each kill
with no help, and there is never more than one worker process."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from tests.support.procs import child_pids, running
from tests.support.server import ServerProcess

KILLS = 4
CLIENTS = 2


def test_random_worker_kills_under_a_steady_stream(tiny_model: Path) -> None:
    rng = random.Random(20261202)
    server = ServerProcess(
        {"THAW_MODEL": str(tiny_model), "THAW_QUEUE_SIZE": "4", "THAW_WARM_WAIT_S": "90"}
    ).start()
    assert server.proc is not None
    parent = server.proc.pid
    answers: list[httpx.Response] = []
    errors: list[BaseException] = []
    most_workers = 0
    stop = threading.Event()

    def workers() -> list[int]:
        return [pid for pid in child_pids(parent) if running(pid)]

    def client(index: int) -> None:
        with httpx.Client(base_url=server.url, timeout=120) as session:
            while not stop.is_set():
                body = {
                    "prompt": f"chaos {index}",
                    "num_inference_steps": rng.randint(1, 4),
                    "width": 64,
                    "height": 64,
                }
                try:
                    answers.append(session.post("/generate", json=body))
                except httpx.HTTPError as exc:  # a hang (timeout) or a dropped request
                    errors.append(exc)

    def count_workers() -> None:
        nonlocal most_workers
        while not stop.is_set():
            most_workers = max(most_workers, len(workers()))
            time.sleep(0.02)

    try:
        server.wait_ready()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        threads.append(threading.Thread(target=count_workers))
        for thread in threads:
            thread.start()
        heal_seconds: list[float] = []
        notice_ms: list[float] = []
        for kill in range(1, KILLS + 1):
            time.sleep(rng.uniform(0.3, 3.0))
            (victim,) = workers()
            os.kill(victim, signal.SIGKILL)
            killed_at = time.monotonic()
            noticed = server.get("/health").json()
            while noticed["models_lost"] < kill and time.monotonic() < killed_at + 10:
                noticed = server.get("/health").json()
            assert noticed["models_lost"] == kill, "the death was not noticed"
            notice_ms.append((time.monotonic() - killed_at) * 1000)
            server.wait_ready(timeout=120)  # healed with no help
            heal_seconds.append(time.monotonic() - killed_at)
        time.sleep(1.0)
        stop.set()
        for thread in threads:
            thread.join(150)
        health = server.get("/health").json()
    finally:
        stop.set()
        server.stop()
    codes = Counter(answer.status_code for answer in answers)
    lost = [answer for answer in answers if answer.status_code != 200]
    print(
        f"\nchaos: {KILLS} kills, {len(answers)} requests: {dict(codes)}; healed in "
        f"{', '.join(f'{s:.1f}' for s in heal_seconds)} s (noticed after at most "
        f"{max(notice_ms):.0f} ms); most workers at once {most_workers}; "
        f"served {health['served']}, models lost {health['models_lost']}"
    )
    assert errors == []
    assert set(codes) <= {200, 503}
    assert len(lost) <= KILLS  # at most the one running at each kill
    for answer in lost:
        assert answer.json()["error"]["code"] == "model_lost"
        assert int(answer.headers["retry-after"]) >= 1
    assert codes[200] >= KILLS
    assert health["served"] == codes[200]
    assert health["models_lost"] == KILLS
    assert health["loads_completed"] == KILLS + 1
    assert most_workers == 1
