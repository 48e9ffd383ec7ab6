"""SnapStart: one INIT's loaded model, snapshotted, and each restored environment its own.

With `AWS_LAMBDA_INITIALIZATION_TYPE=snap-start` the model loads in INIT as with provisioned
concurrency (`LambdaAdapter.init`); then awslambdaric runs the before-snapshot hooks registered
with `snapshot_restore_py`, calls `GET /runtime/restore/next`, and Lambda snapshots the microVM
there. Every environment restored later resumes inside that call and runs the after-restore
hooks before its first `/invocation/next`. A before-snapshot hook that raises fails INIT
(`Runtime.BeforeSnapshotError`); an after-restore hook that raises is reported to
`/runtime/restore/error` (`Runtime.AfterRestoreError`) and the environment is discarded.

Everything made in INIT is shared by every environment restored from one snapshot (AWS Lambda
docs, "Handling uniqueness with Lambda SnapStart"): the environment id, the state of `random`,
numpy's and torch's global generators (here and in the model's worker process), open network
connections, the clocks the cold-start figures count from. So:

- before the snapshot: the model is loaded (a load in progress is waited for; a failed one
  fails INIT rather than snapshot a broken environment), network clients are closed, the garbage
  collector runs once and freezes what survives (later collections skip the model's objects);
- after the restore: a new environment id, every generator reseeded from the kernel's entropy in
  this process and in the model's (`ModelProcess`), the cold-start clocks restarted with one
  `restore` phase, and clients reopen lazily on first use.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import random
import sys
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from runtime.aws.adapter import LambdaAdapter
from runtime.clock import SYSTEM_CLOCK, Clock
from runtime.errors import ThawError
from runtime.lifecycle.service import Service
from runtime.lifecycle.states import SlotState
from runtime.observe.phases import PhaseRecorder

log = logging.getLogger("thaw.snapstart")

RngState = dict[str, str]
"""A short digest of each global generator's state in one process: `random`, and `numpy` and
`torch` where the process has imported them. Equal digests mean equal future draws."""


def new_environment_id() -> str:
    return uuid.uuid4().hex[:12]


def rng_state() -> RngState:
    """This process's generators, digested (nothing is imported that is not already)."""
    state: RngState = {"random": _digest(repr(random.getstate()).encode())}
    numpy: Any = sys.modules.get("numpy")
    if numpy is not None:
        state["numpy"] = _digest(numpy.random.get_state()[1].tobytes())
    torch: Any = sys.modules.get("torch")
    if torch is not None:
        state["torch"] = _digest(bytes(torch.get_rng_state().numpy()))
    return state


def reseed_process(seed: int) -> RngState:
    """Reseed this process's global generators from `seed`; return their new digests.

    numpy takes 32 bits, torch 64 (it reseeds every CUDA device too). Generators a program made
    itself (`numpy.random.default_rng()` kept in a variable) are not reached: make them per
    request, or after the restore."""
    random.seed(seed)
    numpy: Any = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(seed % 2**32)
    torch: Any = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed % 2**63)
    return rng_state()


def fresh_seed() -> int:
    """64 bits from the kernel's CSPRNG, read after the restore: unique per environment."""
    return int.from_bytes(os.urandom(8), "big")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


class ModelProcess(Protocol):
    """Where the loaded model runs, as the function knows it: its pid and its generators.

    For a model in a worker process these run there (`WorkerProcess.call`); for a model in this
    process they are this process's."""

    def describe(self, model: Any) -> dict[str, Any]:
        """`{"pid": int, "rng": RngState}` of the model's process."""
        ...

    def reseed(self, model: Any, seed: int) -> dict[str, Any]:
        """Reseed the model's process; answer as `describe` does, after."""
        ...


class SnapStartHooks:
    """The before-snapshot and after-restore hooks of one Lambda environment."""

    def __init__(
        self,
        adapter: LambdaAdapter,
        service: Service[Any],
        model_process: ModelProcess,
        *,
        seed: Callable[[], int] = fresh_seed,
        new_id: Callable[[], str] = new_environment_id,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.adapter = adapter
        self.service = service
        self.model_process = model_process
        self._seed = seed
        self._new_id = new_id
        self._clock = clock
        self.restores = 0

    def register(self) -> None:
        """Hand the hooks to awslambdaric (through `snapshot_restore_py`, its dependency)."""
        from snapshot_restore_py import register_after_restore, register_before_snapshot

        register_before_snapshot(self.before_snapshot)
        register_after_restore(self.after_restore)

    def before_snapshot(self) -> None:
        """Make the environment snapshot-ready; raising fails INIT (no snapshot is taken)."""
        slot = self.adapter.slot
        slot.wait_settled(None)
        model = slot.peek()
        if slot.state is SlotState.FAILED:
            snapshot = slot.snapshot()
            raise SnapshotNotReady(f"the model failed to load: {snapshot.last_error}")
        described: dict[str, Any] = {}
        if model is not None:
            described = self.model_process.describe(model)
        else:  # THAW_PRELOAD=lazy: a snapshot without the model; the first request loads it
            log.warning("snapstart: snapshot taken without a model (THAW_PRELOAD=lazy)")
        self.adapter.warmer.close_clients()
        if self.adapter.dispatcher is not None:
            self.adapter.dispatcher.close_clients()
        gc.collect()
        gc.freeze()
        log.info(
            "snapstart: ready for the snapshot",
            extra={
                "environment_id": self.adapter.warmer.environment_id,
                "model": slot.snapshot().status,
                "worker_pid": described.get("pid"),
                "rng": {"server": rng_state(), "worker": described.get("rng")},
            },
        )

    def after_restore(self) -> None:
        """Give this restored environment its own identity and clocks; raising reports
        `Runtime.AfterRestoreError` and Lambda discards the environment."""
        started = self._clock.monotonic()
        previous = self.adapter.warmer.environment_id
        environment_id = self._new_id()
        self.adapter.warmer.environment_id = environment_id
        server = reseed_process(self._seed())
        model = self.adapter.slot.peek()
        described: dict[str, Any] = {}
        if model is not None:
            try:
                described = self.model_process.reseed(model, self._seed())
            except Exception as exc:  # a dead worker (WorkerDied): this environment is unusable
                raise RestoreFailed(
                    f"the model's worker did not reseed: {type(exc).__name__}: {exc}"
                ) from exc
        seconds = self._clock.monotonic() - started
        self.restores += 1
        restart_clocks(self.service, started, seconds, self._clock)
        self.adapter.restored(seconds)
        log.info(
            "snapstart: restored",
            extra={
                "environment_id": environment_id,
                "previous_environment_id": previous,
                "seconds": round(seconds, 4),
                "worker_pid": described.get("pid"),
                "rng": {"server": server, "worker": described.get("rng")},
            },
        )


class SnapshotNotReady(ThawError):
    """The environment cannot be snapshotted (its model failed to load)."""

    code = "snapshot_not_ready"


class RestoreFailed(ThawError):
    """A restored environment could not be given its own identity."""

    code = "restore_failed"


def restart_clocks(service: Service[Any], started: float, seconds: float, clock: Clock) -> None:
    """`/health` counts from the restore: uptime, the time to ready, and one `restore` phase in
    place of INIT's load phases (their times belong to the snapshot's INIT, not this start).

    """
    recorder = PhaseRecorder(clock, origin=started)  # the restore is this environment's start
    token = recorder.begin("restore", at=started)
    recorder.end(token, at=started + seconds)
    service.restarted(started, recorder, ready_at=started + seconds)
