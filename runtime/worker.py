"""A model that lives in a child process, so the HTTP process never imports torch.

Importing torch and transformers holds the GIL for long stretches inside single C calls (see the
README, "Performance"), which no thread switch interval can break: a health probe that arrives then
waits. With `THAW_WORKER=process` the loader runs in a child started with `python -m
runtime.worker`, the parent keeps serving probes, and each call to the model is a message over a
socket pair (pickled arguments and results).

Calls are multiplexed: each carries an id, the child runs each in a thread of its own and
acknowledges it (`started`) as soon as it reads it, and a reader thread in the parent hands each
answer to its caller. So `THAW_MAX_CONCURRENCY` calls really run at once, and no call waits for
another's answer.

The child reports its load phases as it goes, and they appear in the parent's `PhaseRecorder`
(so in `/health`). The parent's reader notices the child's death the moment its end of the socket
closes, whatever the server is doing: it records the exit status or signal, tells the owner
(`when_lost`, so the slot can load a fresh worker with no request arriving) and fails the calls
in flight with `WorkerDied`, whose `started` says whether the child had begun that call (only
those could have been the cause; the others may run again on the next worker). The child, in
turn, leaves at once when its parent is gone: its main thread always reads the socket, and the
socket's end is the parent's death, however the parent died. A child that cannot read (stopped,
or wedged in a native call that holds its GIL) is ended by the kernel instead: on Linux it asks
for SIGKILL when its parent dies (`PR_SET_PDEATHSIG`). That signal follows the parent *thread*
that spawned the child, so every worker is spawned from one thread that lives as long as the
process (`_SPAWNER`), never from a load thread that ends after the load.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from runtime import work as work_in_hand
from runtime.errors import ModelLost
from runtime.observe.phases import PhaseRecorder

log = logging.getLogger("thaw.worker")


class WorkerDied(ModelLost):
    """The model's process exited; the model is lost. `started` says whether the child had
    begun the call that raised this (False: the call may run again on a fresh worker)."""


def import_ref(ref: str) -> Callable[..., Any]:
    """`package.module:function` to the function."""
    module_name, _, attr = ref.partition(":")
    found: Callable[..., Any] = getattr(importlib.import_module(module_name), attr)
    return found


CANCEL_POLL_S = 0.1
"""How often a waiting call looks whether its work was canceled (then tells the child)."""


class _Call:
    """One call in flight: filled by the parent's reader thread."""

    def __init__(self, work: work_in_hand.Work) -> None:
        self.work = work
        self.done = threading.Event()
        self.started = False
        self.value: Any = None
        self.error: BaseException | None = None

    def finish(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value, self.error = value, error
        self.done.set()


class WorkerProcess:
    """The parent's handle on one child process holding one model."""

    def __init__(self, load_ref: str, *, env: Mapping[str, str] | None = None) -> None:
        self.started_at = time.monotonic()
        parent, child = socket.socketpair()
        command = [
            sys.executable,
            "-m",
            "runtime.worker",
            str(child.fileno()),
            load_ref,
            str(os.getpid()),
        ]
        try:
            self._proc = _SPAWNER.submit(
                subprocess.Popen,
                command,
                pass_fds=(child.fileno(),),
                env=dict(os.environ if env is None else env),
                stdin=subprocess.DEVNULL,
            ).result()
        finally:
            child.close()
        self.spawn_seconds = time.monotonic() - self.started_at
        self._conn = Connection(parent.detach())
        self._lock = threading.Lock()  # guards the fields below
        self._sending = threading.Lock()
        self._calls: dict[int, _Call] = {}
        self._ids = itertools.count(1)
        self._lost: str | None = None
        self._closing = False
        self._watchers: list[Callable[[str], None]] = []
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
            previous, _early = _early, None
        if previous is not None:
            previous.close()
        early = cls(load_ref, env=env)
        early.started_early = True
        with _early_lock:
            _early = early
        return early

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

    def exited(self) -> str | None:
        """Why the child is gone, found now without waiting (the reader thread may not have
        seen its socket end yet, say right after a Lambda thaw), or None while it runs."""
        code = self._proc.poll()
        if code is None:
            return None
        how = f"signal {-code}" if code < 0 else f"status {code}"
        return f"the model worker exited ({how})"

    @property
    def lost(self) -> str | None:
        """Why the child is gone (its exit status or signal), or None while it lives."""
        with self._lock:
            return self._lost

    def wait_loaded(self, phases: PhaseRecorder, timeout: float | None = None) -> dict[str, Any]:
        """Mirror the child's phases until it reports its model loaded (its summary) or failed.

        A child still loading after `timeout` seconds is killed (a hung load must not hold memory
        or block a fresh attempt) and `TimeoutError` is raised. Once loaded, a reader thread
        serves the calls and watches for the child's death."""
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
                message = self._receive_while_loading()
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
                    threading.Thread(
                        target=self._read, name=f"thaw-worker-{self.pid}", daemon=True
                    ).start()
                    return dict(message[1])
                elif kind == "failed":
                    raise _rebuild(message[1], message[2])
        except BaseException:
            for token in open_phases.values():
                phases.end(token, failed=True)
            self.close()
            raise

    def when_lost(self, callback: Callable[[str], None]) -> None:
        """Call `callback(reason)` once, from the reader thread, if the child dies unasked (not
        after `close`). Called at once if it is already gone."""
        with self._lock:
            lost = self._lost
            if lost is None:
                self._watchers.append(callback)
        if lost is not None:
            callback(lost)

    def call(self, func_ref: str, *args: Any) -> Any:
        """`func(model, *args)` in the child, beside any other calls; its exception is raised
        here, and `WorkerDied` if the child dies first."""
        call = _Call(work_in_hand.current())
        with self._lock:
            if self._lost is not None:
                raise WorkerDied(f"{self._lost} before the call", started=False)
            call_id = next(self._ids)
            self._calls[call_id] = call
        self._send(("call", call_id, func_ref, args))
        told = False
        while not call.done.wait(CANCEL_POLL_S):
            if not told and call.work.canceled:
                self._send(("cancel", call_id))  # the child stops it at its next step
                told = True
        if call.error is not None:
            raise call.error
        return call.value

    def _send(self, message: tuple[Any, ...]) -> None:
        try:
            with self._sending:
                self._conn.send(message)
        except (OSError, ValueError):
            pass  # the child is gone: the reader fails the calls when it sees the socket end

    def close(self, timeout: float = 10.0) -> None:
        """Stop the child (politely, then by force) and release the socket. A child busy with
        calls is killed at once (their callers, cut off at a drain deadline, get `WorkerDied`)."""
        with self._lock:
            self._closing = True
            busy = bool(self._calls)
        if self._proc.poll() is None:
            if busy:
                self._proc.kill()
            else:
                with contextlib.suppress(OSError, ValueError), self._sending:
                    self._conn.send(("stop",))
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._conn.close()

    # -- the reader thread ---------------------------------------------------------------------

    def _read(self) -> None:
        """Hand each answer to its call until the socket ends, then report the death."""
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError, ValueError):
                break
            kind, call_id = message[0], message[1]
            with self._lock:
                call = self._calls.get(call_id)
                if call is not None and kind not in ("started", "progress"):
                    del self._calls[call_id]
            if call is None:
                continue
            if kind == "started":
                call.started = True
            elif kind == "progress":
                call.work.report(message[2], message[3], message[4])
            elif kind == "result":
                call.finish(value=message[2])
            else:
                call.finish(error=_rebuild(message[2], message[3]))
        self._ended()

    def _ended(self) -> None:
        reason = f"the model worker exited ({self._exit_reason()})"
        with self._lock:
            self._lost = reason
            closing = self._closing
            calls, self._calls = self._calls, {}
            watchers, self._watchers = self._watchers, []
        if not closing:
            log.warning("model worker died", extra={"pid": self.pid, "reason": reason})
            # The owner hears first, so a caller that retries finds the slot already reloading.
            for watcher in watchers:
                try:
                    watcher(reason)
                except Exception:
                    log.exception("a worker-death callback failed")
        for call in calls.values():
            when = "during the call" if call.started else "before the call started"
            call.finish(error=WorkerDied(f"{reason} {when}", started=call.started))

    def _exit_reason(self) -> str:
        try:
            code = self._proc.wait(5)
        except subprocess.TimeoutExpired:  # its socket broke but it runs on: end it
            self._proc.kill()
            code = self._proc.wait()
        return f"signal {-code}" if code < 0 else f"status {code}"

    def _receive_while_loading(self) -> tuple[Any, ...]:
        try:
            message: tuple[Any, ...] = self._conn.recv()
        except (EOFError, OSError) as exc:
            reason = f"the model worker exited ({self._exit_reason()}) while loading"
            with self._lock:
                self._lost = reason
            raise WorkerDied(reason, started=True) from exc
        return message


_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="thaw-spawner")
"""The one thread that starts workers: it lives as long as the process (see the module's
docstring on `PR_SET_PDEATHSIG`)."""

_early: WorkerProcess | None = None
_early_lock = threading.Lock()


# Exceptions travel as themselves only when their class comes from the standard library or this
# package: unpickling one imports its module in the parent, and a torch error (say
# `torch.cuda.OutOfMemoryError`) imported torch into the HTTP process, 2.2 s of GIL-holding
# imports on the first failed request, measured.
PORTABLE_ROOTS = frozenset(sys.stdlib_module_names) | {"runtime"}  # not __name__: __main__ here


class RemoteError(RuntimeError):
    """An exception from the worker whose class the parent does not import; keeps its text,
    which begins with the class's name (`type_name`)."""

    @property
    def type_name(self) -> str:
        return str(self).partition(":")[0]


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
        super().__init__(logs=False)  # the parent logs each phase as it mirrors it
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
    """The child: load the model, report, then run calls (each in its own thread) until told to
    stop; leave at once when the parent is gone, whatever the calls are doing."""
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
        send(("failed", *_portable(exc)))
        return
    describe = getattr(model, "summary", None)
    loading.clear()  # from here on, what the parent sends is for the loop below
    send(("ready", describe() if callable(describe) else {}))
    canceled: dict[int, threading.Event] = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            os._exit(0)  # the parent is gone: a call still running has nobody to answer
        if message[0] == "stop":
            return
        if message[0] == "cancel":
            flag = canceled.get(message[1])
            if flag is not None:
                flag.set()
            continue
        _, call_id, func_ref, args = message
        flag = canceled[call_id] = threading.Event()
        send(("started", call_id))
        threading.Thread(
            target=_run_call,
            args=(send, call_id, model, func_ref, args, flag, canceled),
            name=f"thaw-call-{call_id}",
            daemon=True,
        ).start()


def _run_call(
    send: Callable[[tuple[Any, ...]], None],
    call_id: int,
    model: Any,
    func_ref: str,
    args: tuple[Any, ...],
    flag: threading.Event,
    flags: dict[int, threading.Event],
) -> None:
    work = _ChildWork(send, call_id, flag)
    try:
        with work_in_hand.running(work):
            result = import_ref(func_ref)(model, *args)
    except Exception as exc:
        answer: tuple[Any, ...] = ("raise", call_id, *_portable(exc))
    else:
        answer = ("result", call_id, result)
    finally:
        flags.pop(call_id, None)
    with contextlib.suppress(OSError, ValueError):  # the parent left: the main thread exits
        send(answer)


class _ChildWork(work_in_hand.Work):
    """A call's work in the child: progress goes to the parent, which passes it to the
    requests' controls; the parent's `cancel` message sets `flag`."""

    def __init__(
        self, send: Callable[[tuple[Any, ...]], None], call_id: int, flag: threading.Event
    ) -> None:
        super().__init__(canceled=flag.is_set)
        self._send = send
        self._call_id = call_id

    def report(self, step: int, steps: int, at: float | None = None) -> None:
        at = time.time() if at is None else at  # when the step ended, on this side
        with contextlib.suppress(OSError, ValueError):
            self._send(("progress", self._call_id, step, steps, at))


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


PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Ask the kernel for SIGKILL when the spawning thread's process ends (Linux), and leave
    now if it has already ended (the request would then never fire)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the socket's end still stops the child
        return
    if os.getppid() != parent:
        os._exit(0)


def main(argv: list[str]) -> None:
    # The parent handles SIGINT/SIGTERM and stops the worker when it is done with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if len(argv) > 3:
        _die_with_parent(int(argv[3]))
    from runtime.observe.logs import configure_logging
    from runtime.settings import Settings, SettingsError

    try:  # the parent read the same settings and reports a bad one; logs must work meanwhile
        settings = Settings.from_env(os.environ)
    except SettingsError:
        settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    serve(int(argv[1]), argv[2])


if __name__ == "__main__":
    main(sys.argv)
