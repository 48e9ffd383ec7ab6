"""A real S3 API server for tests: moto's server app in a subprocess, over HTTP on loopback.

It is what `python -m moto.server` runs (moto's WSGI app under werkzeug), wrapped in a small WSGI
layer that counts the requests it serves and can break a download on purpose, so tests can prove
a warm start downloads nothing and a connection cut mid-object fails cleanly:

- `GET /_thaw/requests` lists the requests served so far (`"GET /bucket/key"`, with `?list` for
  listings and ` range` for ranged reads); `DELETE /_thaw/requests` clears the list.
- `POST /_thaw/fault` with `{"key": suffix, "mode": "cut"|"stall", "after": n}` makes every GET of
  an object whose path ends with `suffix` send `n` body bytes and then drop the connection (cut)
  or hang (stall); `DELETE /_thaw/fault` heals it.

Writes (PUT, POST, DELETE) are served one at a time. moto checks a conditional write's
`If-None-Match`/`If-Match` and then stores the object in two steps, with no lock between them,
so two threads could both pass the check; S3 makes the pair atomic, and so does this layer.

Run: `python -m tests.support.s3_server PORT`. Tests use `S3Server`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.support.server import ROOT, free_port

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


class Faults:
    """The WSGI layer: counts requests, serves the control endpoints, injects faults."""

    def __init__(self, app: Callable[[Environ, StartResponse], Iterable[bytes]]) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.writes = threading.Lock()
        self.requests: list[str] = []
        self.fault: dict[str, Any] | None = None

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        method: str = environ["REQUEST_METHOD"]
        if path.startswith("/_thaw/"):
            return self._control(method, path, environ, start_response)
        query = environ.get("QUERY_STRING", "")
        label = f"{method} {path}" + ("?list" if "list-type" in query else "")
        if "HTTP_RANGE" in environ:
            label += " range"
        with self.lock:
            self.requests.append(label)
            fault = self.fault
        if method in ("PUT", "POST", "DELETE"):
            with self.writes:
                return list(self.app(environ, start_response))
        body = self.app(environ, start_response)
        if method == "GET" and fault and path.endswith(fault["key"]):
            return self._broken(body, fault)
        return body

    def _broken(self, body: Iterable[bytes], fault: dict[str, Any]) -> Iterator[bytes]:
        budget = int(fault["after"])
        for chunk in body:
            if len(chunk) >= budget:
                yield chunk[:budget]
                break
            budget -= len(chunk)
            yield chunk
        if fault["mode"] == "stall":
            while self.fault is fault:
                time.sleep(0.05)
        # Raising after the headers went out makes werkzeug drop the connection mid-body.
        raise ConnectionAbortedError("injected: connection cut mid-object")

    def _control(
        self, method: str, path: str, environ: Environ, start_response: StartResponse
    ) -> Iterable[bytes]:
        with self.lock:
            if path == "/_thaw/requests" and method == "DELETE":
                self.requests.clear()
            if path == "/_thaw/fault":
                if method == "POST":
                    size = int(environ.get("CONTENT_LENGTH") or 0)
                    self.fault = json.loads(environ["wsgi.input"].read(size))
                elif method == "DELETE":
                    self.fault = None
            payload = json.dumps({"requests": self.requests, "fault": self.fault}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [payload]


class S3Server:
    """Start, drive and stop the server subprocess."""

    def __init__(self, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.extra_env = env or {}
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.endpoint, timeout=10)

    def start(self, timeout: float = 60) -> S3Server:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.support.s3_server", str(self.port)],
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"S3 server exited:\n{self.log_path.read_text()}")
            try:
                self.http.get("/_thaw/requests")
                return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise TimeoutError("S3 server did not start")

    def client(self, service: str = "s3", key: str = "testing", secret: str = "testing") -> Any:
        import boto3

        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=key,
            aws_secret_access_key=secret,
        )

    def env(self) -> dict[str, str]:
        """What a thaw process needs to reach this server."""
        return {
            "THAW_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def requests(self) -> list[str]:
        result: list[str] = self.http.get("/_thaw/requests").json()["requests"]
        return result

    def clear_requests(self) -> None:
        self.http.delete("/_thaw/requests")

    def break_key(self, key_suffix: str, mode: str = "cut", after: int = 1000) -> None:
        self.http.post("/_thaw/fault", json={"key": key_suffix, "mode": mode, "after": after})

    def heal(self) -> None:
        self.http.delete("/_thaw/fault")

    def stop(self) -> None:
        self.http.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def upload_folder(client: Any, folder: Path, bucket: str, prefix: str) -> int:
    """Put every file under `folder` at `prefix/<relative path>`; return the bytes sent."""
    sent = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relpath = path.relative_to(folder).as_posix()
        if relpath.startswith("."):
            continue
        client.put_object(Bucket=bucket, Key=f"{prefix}/{relpath}", Body=path.read_bytes())
        sent += path.stat().st_size
    return sent


def _serve(port: int) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import run_simple

    os.environ.setdefault("MOTO_PORT", str(port))
    app = Faults(DomainDispatcherApplication(create_backend_app))
    run_simple("127.0.0.1", port, app, threaded=True)  # type: ignore[arg-type]


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
