"""The image under AWS's own Runtime Interface Emulator, bundled in it, run the way
docs/lambda.md tells a user to: `--entrypoint aws-lambda-rie`, then invokes on its invocations
URL. AWS's emulator runs INIT on the first invoke and never freezes the environment; the
freezing, INIT types and SnapStart are test_lambda_mode's (thaw's own emulator).

The container uses the host's network with both of the emulator's addresses on loopback ports,
so nothing is published beyond loopback; a second test runs the docs' own `docker run` line,
with its port mapping, where the engine can publish ports.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.image.engine import Engine
from tests.image.containers import SMALL_CPU_ENV, Container, free_port, png_size
from tests.support.rie import INVOKE_PATH

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "tests" / "fixtures" / "events"
EMULATOR = "/usr/local/bin/aws-lambda-rie"
RUNTIME = ["/opt/venv/bin/python", "-m", "awslambdaric", "handler.lambda_function.handler"]


def event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return loaded


def invoke(url: str, payload: Any, timeout: float = 240) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return int(answer.status), json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return int(error.code), error.read()


def wait_listening(url: str, container: Container, timeout: float = 60) -> None:
    """The emulator answers any GET on its address (404) once it listens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError):
            if not container.running:
                raise RuntimeError(f"the container exited:\n{container.logs()[-3000:]}") from None
            time.sleep(0.1)
    raise TimeoutError(f"nothing listened on {url} within {timeout}s")


@pytest.fixture(scope="module")
def emulated(engine: Engine, image: str) -> Iterator[tuple[Container, str]]:
    port = free_port()
    options = [
        *("--network", "host", "--read-only", "--tmpfs", "/tmp:rw,size=512m,mode=1777"),
        *("--entrypoint", EMULATOR),
    ]
    # The emulator takes its addresses, then the runtime's command: a container's "command".
    command = [
        *("--runtime-interface-emulator-address", f"127.0.0.1:{port}"),
        *("--runtime-api-address", f"127.0.0.1:{free_port()}"),
        *RUNTIME,
    ]
    container = Container(engine, image, dict(SMALL_CPU_ENV), options, command).start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_listening(base + "/", container)
        yield container, base + INVOKE_PATH
    except BaseException:
        print(container.logs()[-5000:])
        raise
    finally:
        container.remove()


def test_the_image_bundles_aws_emulator_and_a_cold_invoke_answers_a_png(
    emulated: tuple[Container, str],
) -> None:
    _, url = emulated
    status, answer = invoke(url, event("function_url_generate.json"))
    assert status == 200, answer
    assert answer["statusCode"] == 200, answer
    assert answer["isBase64Encoded"] is True
    assert png_size(base64.b64decode(answer["body"]))[0] > 0


def test_warm_invokes_warm_up_pings_and_one_load(emulated: tuple[Container, str]) -> None:
    container, url = emulated
    for ping in ("thaw_warmup.json", "eventbridge_scheduled.json", "serverless_plugin_warmup.json"):
        status, answer = invoke(url, event(ping), timeout=60)
        assert status == 200, (ping, answer)
        assert answer["warm"] is True, (ping, answer)
    status, answer = invoke(url, event("function_url_health.json"), timeout=60)
    assert status == 200, answer
    assert answer["statusCode"] == 200, answer
    report = json.loads(answer["body"])
    assert report["status"] == "ready"
    assert report["load_attempts"] == 1
    assert report["loads_completed"] == 1
    assert container.logs().count('"model load started"') == 1


def documented_command() -> tuple[list[str], str]:
    """docs/lambda.md's `docker run` under the emulator and its `curl` target, as written."""
    text = (ROOT / "docs" / "lambda.md").read_text()
    match = re.search(r"^docker run --rm -p (\d+):8080 (.*?)\n\n", text, re.M | re.S)
    assert match, "docs/lambda.md has no `docker run --rm -p PORT:8080` block"
    words = shlex.split(match.group(0).replace("\\\n", " "))
    assert f"http://localhost:{match.group(1)}{INVOKE_PATH}" in text
    return words, match.group(1)


def test_the_documented_docker_run_names_the_bundled_emulator() -> None:
    words, _ = documented_command()
    assert words[words.index("--entrypoint") + 1] in (EMULATOR, "aws-lambda-rie")
    assert words[-len(RUNTIME) :] == RUNTIME


def test_the_documented_docker_run_works_as_written(engine: Engine, image: str) -> None:
    """The docs' line itself (its image name and host port swapped for the test's, published on
    loopback only): the port published from the container's 8080, where the emulator listens by
    default. Publishing needs the engine's network stack (podman: netavark and iptables)."""
    words, port = documented_command()
    host_port = free_port()
    words = [image if w == "thaw:cpu" else w for w in words]
    words = [f"127.0.0.1:{host_port}:8080" if w == f"{port}:8080" else w for w in words]
    name = f"thaw-rie-docs-{host_port}"
    run = ["run", "--detach", "--name", name, *words[words.index("--rm") + 1 :]]
    started = engine.run(*run, check=False, timeout=120)
    try:
        assert started.returncode == 0, started.stderr
        url = f"http://127.0.0.1:{host_port}{INVOKE_PATH}"
        deadline = time.monotonic() + 240
        answer: Any = None
        status = 0
        while time.monotonic() < deadline:
            try:
                status, answer = invoke(url, {"thaw": "warmup"}, timeout=240)
                break
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        assert status == 200, answer
        assert answer["warm"] is True, answer
    finally:
        engine.remove_container(name)
