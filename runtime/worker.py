"""A model that lives in a child process, so the HTTP process never imports torch.

Importing torch and transformers holds the GIL for long stretches inside single C calls (see the
README, "Performance"), which no thread switch interval can break: a health probe that arrives then
waits. With `THAW_WORKER=process` the loader runs in a child started with `python -m
runtime.worker`, the parent keeps serving probes, and each call to the model is a message over a
socket pair (pickled arguments and results; one call at a time per worker).

The child reports its load phases as it goes, and they appear in the parent's `PhaseRecorder`
(so in `/health`). If the child dies, every call fails with `WorkerDied` and the owner unloads the
model, so the next demand starts a fresh worker.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from typing import Any

from runtime.observe.phases import PhaseRecorder


class WorkerDied(RuntimeError):
    """The model's process exited; the call (and the model) is lost."""


def import_ref(ref: str) -> Callable[..., Any]:
    """`package.module:function` to the function."""
    module_name, _, attr = ref.partition(":")
    found: Callable[..., Any] = getattr(importlib.import_module(module_name), attr)
    return found


class WorkerProcess:
    """The parent's handle on one child process holding one model."""

    def __init__(self, load_ref: str, *, env: Mapping[str, str] | None = None) -> None:
        self.started_at = time.monotonic()
        parent, child = socket.socketpair()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "runtime.worker", str(child.fileno()), load_ref],
                pass_fds=(child.fileno(),),
                env=dict(os.environ if env is None else env),
                stdin=subprocess.DEVNULL,
            )
        finally:
            child.close()
        self.spawn_seconds = time.monotonic() - self.started_at
        self._conn = Connection(parent.detach())
        self._lock = threading.Lock()
        self.load_ref = load_ref
        self.env = dict(os.environ if env is None else env)
        self.started_early = False

    @classmethod
    def start_early(cls, load_ref: str, *, env: Mapping[str, str] | None = None) -> WorkerProcess:
        """Start a worker now, before its owner exists, and keep it for `take` (one at a time).

        A server calls this first thing, so the child imports torch and loads the weights while
        the server still imports its web stack, instead of after. The child stops on its own if
        this process dies before anyone takes it (it watches its socket while it loads)."""
        global _early
        with _early_lock:
            if _early is not None:
                _early.close()
            _early = cls(load_ref, env=env)
            _early.started_early = True
            return _early

    @classmethod
    def take(cls, load_ref: str, *, env: Mapping[str, str] | None = None) -> WorkerProcess:
        """The worker started early for this loader and environment, else a new one."""
        global _early
        wanted = dict(os.environ if env is None else env)
        with _early_lock:
            early, _early = _early, None
        if early is not None:
            if early.load_ref == load_ref and early.env == wanted and early._proc.poll() is None:
                return early
            early.close()  # started for another model (or already gone): not this load's
        return cls(load_ref, env=wanted)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def wait_loaded(self, phases: PhaseRecorder, timeout: float | None = None) -> dict[str, Any]:
        """Mirror the child's phases until it reports its model loaded (its summary) or failed.

        A child still loading after `timeout` seconds is killed (a hung load must not hold memory
        or block a fresh attempt) and `TimeoutError` is raised."""
        open_phases: dict[str, object] = {}
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if left is not None and not self._conn.poll(left):
                    self._proc.kill()
                    self._proc.wait()
                    raise TimeoutError(
                        f"the model worker did not finish within {timeout:g}s; it was stopped"
                    )
                message = self._receive("while loading")
                kind = message[0]
                # Phases carry the child's own times: an early worker's messages wait in the
                # socket until its owner reads them, and their durations must not shrink.
                if kind == "begin":
                    open_phases[message[1]] = phases.begin(message[1], at=message[2])
                elif kind == "end":
                    token = open_phases.pop(message[1], None)
                    if token is not None:
                        phases.end(token, failed=message[2], at=message[3])
                elif kind == "progress":
                    phases.progress(message[1], **message[2])
                elif kind == "ready":
                    return dict(message[1])
                elif kind == "raise":
                    raise _rebuild(message[1], message[2])
        except BaseException:
            for token in open_phases.values():
                phases.end(token, failed=True)
            self.close()
            raise

    def call(self, func_ref: str, *args: Any) -> Any:
        """`func(model, *args)` in the child; its exception is raised here."""
        with self._lock:
            try:
                self._conn.send(("call", func_ref, args))
            except (OSError, ValueError) as exc:
                raise self._died("before a call") from exc
            message = self._receive("during a call")
        if message[0] == "result":
            return message[1]
        raise _rebuild(message[1], message[2])

    def close(self, timeout: float = 10.0) -> None:
        """Stop the child (politely, then by force) and release the socket. A child busy with
        a call cannot read `stop` until the call ends: it is killed at once (the caller, cut off
        at a drain deadline, gets `WorkerDied`)."""
        if self._proc.poll() is None:
            if self._lock.locked():
                self._proc.kill()
            else:
                with contextlib.suppress(OSError, ValueError):
                    self._conn.send(("stop",))
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._conn.close()

    def _receive(self, when: str) -> tuple[Any, ...]:
        try:
            message: tuple[Any, ...] = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise self._died(when) from exc
        return message

    def _died(self, when: str) -> WorkerDied:
        try:
            code = self._proc.wait(5)
        except subprocess.TimeoutExpired:  # its socket broke but it runs on: end it
            self._proc.kill()
            code = self._proc.wait()
        reason = f"signal {-code}" if code < 0 else f"status {code}"
        return WorkerDied(f"the model worker exited ({reason}) {when}")


_early: WorkerProcess | None = None
_early_lock = threading.Lock()


# Exceptions travel as themselves only when their class comes from the standard library or this
# package: unpickling one imports its module in the parent, and a torch error (say
# `torch.cuda.OutOfMemoryError`) imported torch into the HTTP process, 2.2 s of GIL-holding
# imports on the first failed request, measured.
PORTABLE_ROOTS = frozenset(sys.stdlib_module_names) | {"runtime"}  # not __name__: __main__ here


class RemoteError(RuntimeError):
    """An exception from the worker whose class the parent does not import; keeps its text."""


def _rebuild(error: BaseException | None, text: str) -> BaseException:
    return error if error is not None else RemoteError(text)


def _portable(exc: BaseException) -> tuple[BaseException | None, str]:
    """The exception itself when its class is light to import and it survives pickling, and its
    text (with the class's name) in any case."""
    import pickle

    text = f"{type(exc).__name__}: {exc}"
    if type(exc).__module__.partition(".")[0] not in PORTABLE_ROOTS:
        return None, text
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return None, text
    return exc, text


class _ForwardingPhases(PhaseRecorder):
    """The child's recorder: every phase event also goes to the parent."""

    def __init__(self, send: Callable[[tuple[Any, ...]], None]) -> None:
        super().__init__()
        self._send = send

    def begin(self, name: str, *, at: float | None = None) -> object:
        at = time.monotonic() if at is None else at
        self._send(("begin", name, at))
        return super().begin(name, at=at)

    def end(self, token: object, *, failed: bool = False, at: float | None = None) -> None:
        at = time.monotonic() if at is None else at
        super().end(token, failed=failed, at=at)
        self._send(("end", getattr(token, "name", ""), failed, at))

    def progress(self, name: str, **detail: Any) -> None:
        super().progress(name, **detail)
        self._send(("progress", name, detail))


def serve(fd: int, load_ref: str) -> None:
    """The child: load the model, report, then answer calls until told to stop or orphaned."""
    conn = Connection(fd)
    sending = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with sending:
            conn.send(message)

    loading = threading.Event()
    loading.set()
    threading.Thread(target=_stop_if_told, args=(conn, loading), daemon=True).start()
    try:
        model = import_ref(load_ref)(_ForwardingPhases(send))
    except BaseException as exc:
        send(("raise", *_portable(exc)))
        return
    describe = getattr(model, "summary", None)
    loading.clear()  # from here on, what the parent sends is for the loop below
    send(("ready", describe() if callable(describe) else {}))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if message[0] == "stop":
            return
        _, func_ref, args = message
        try:
            result = import_ref(func_ref)(model, *args)
        except Exception as exc:
            send(("raise", *_portable(exc)))
        else:
            send(("result", result))


def _stop_if_told(conn: Connection, loading: threading.Event) -> None:
    """While the model loads the parent sends nothing but `stop`, and its death reads as the end
    of the socket: either way, leave at once instead of finishing a load nobody will use."""
    while loading.is_set():
        try:
            readable = conn.poll(0.2)
        except (EOFError, OSError):
            readable = True
        if readable and loading.is_set():
            os._exit(0)


def main(argv: list[str]) -> None:
    # The parent handles SIGINT/SIGTERM and stops the worker when it is done with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from runtime.observe.logs import configure_logging

    configure_logging(os.environ.get("THAW_LOG_LEVEL", "info"))
    serve(int(argv[1]), argv[2])


if __name__ == "__main__":
    main(sys.argv)
