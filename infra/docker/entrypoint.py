"""The container's entry point: one image, run as a Lambda function or as an HTTP server.

Lambda sets `AWS_LAMBDA_RUNTIME_API` in every execution environment; then the real runtime
interface client (`python -m awslambdaric <handler>`) takes over the process. Anywhere else
(Cloud Run, Knative, Kubernetes, `docker run`) the same image serves HTTP with uvicorn
(`python -m handler`). The process is replaced (`exec`), so signals reach the server directly.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

LAMBDA_HANDLER = "handler.lambda_function.handler"
"""`module.attribute` that awslambdaric imports at INIT; the image's CMD may name another."""

LAMBDA_CLIENT_MODULE = "awslambdaric"
SERVER_MODULE = "handler"


def command(environ: Mapping[str, str], args: Sequence[str]) -> list[str]:
    """The command this container runs, given its environment and CMD arguments."""
    if environ.get("AWS_LAMBDA_RUNTIME_API"):
        handler = args[0] if args else LAMBDA_HANDLER
        return [sys.executable, "-m", LAMBDA_CLIENT_MODULE, handler]
    # Outside Lambda the CMD (the Lambda handler name) means nothing: serve HTTP.
    return [sys.executable, "-m", SERVER_MODULE]


def main() -> None:
    argv = command(os.environ, sys.argv[1:])
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
