"""The container's entry point: one image, run as a Lambda function or as an HTTP server.

Lambda sets `AWS_LAMBDA_RUNTIME_API` in every execution environment; then the real runtime
interface client (`python -m awslambdaric <handler>`) takes over the process. Anywhere else
(Cloud Run, Knative, Kubernetes, `docker run`) the same image serves HTTP with uvicorn
(`python -m handler`). The process is replaced (`exec`), so signals reach the server directly.

One exception: awslambdaric installs no SIGTERM handler, and a container's PID 1 ignores every
signal it has no handler for, so `docker stop` of the image in Lambda mode (as the Runtime API
emulators run it) waited out its grace period and killed it (exit 137). On Lambda the runtime is
never PID 1; in a container it is, and there this script stays as a minimal init: it runs the
client as its child, passes signals on, reaps orphans, and exits as the child did (SIGTERM: 143,
as `docker run --init` would).
"""

from __future__ import annotations

import contextlib
import os
import signal
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


FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
"""What a minimal init passes on to its child (SIGKILL and SIGSTOP cannot be caught)."""


def supervise(argv: Sequence[str]) -> int:
    """Run `argv` as a child, forward signals to it, reap every child; return its exit status."""
    pid = os.posix_spawn(argv[0], list(argv), os.environ)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):  # it has just exited
            os.kill(pid, signum)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    while True:
        # Orphans (the model worker, when the client is gone) are reparented here: reap them too.
        reaped, status = os.wait()
        if reaped == pid:
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code


def main() -> None:
    argv = command(os.environ, sys.argv[1:])
    if os.getpid() == 1 and os.environ.get("AWS_LAMBDA_RUNTIME_API"):
        sys.exit(supervise(argv))
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
