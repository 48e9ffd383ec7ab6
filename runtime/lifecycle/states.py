"""The states of a model slot, and of the process around it."""

from __future__ import annotations

from enum import StrEnum


class SlotState(StrEnum):
    """Where the model stands. Probes and `/health` report these while the process serves."""

    COLD = "cold"
    """No model in memory and no load running; the next demand starts one."""

    LOADING = "loading"
    """A load is running (or backing off between attempts); callers wait on it."""

    READY = "ready"
    """The model is in memory and serves requests."""

    FAILED = "failed"
    """Every attempt failed; the reason is kept, and a fresh load starts by itself after a
    cool-down that grows with each failed load (or on demand once the cool-down is over)."""

    RELEASING = "releasing"
    """The previous model is being released (a worker stopping, GPU memory handed back); a new
    load waits until it is gone, so two models are never in memory at once."""

    @property
    def public_name(self) -> str:
        """The word probes see; a loading slot is "warming_up", as operators expect."""
        return "warming_up" if self is SlotState.LOADING else self.value


class ProcessState(StrEnum):
    """Where the process stands, whatever its model's state."""

    SERVING = "serving"
    """Accepting work (the model's own state says whether it can be served now)."""

    DRAINING = "draining"
    """Stopping: accepted work finishes, new work is refused, no load starts."""

    STOPPED = "stopped"
    """The model was released for good; the process is about to exit."""


def public_status(model: SlotState, process: ProcessState) -> str:
    """The one word `/health` and `/readyz` report: the process's state once it stops serving,
    else the model's."""
    return model.public_name if process is ProcessState.SERVING else process.value


STATUSES = tuple(
    [state.public_name for state in SlotState]
    + [state.value for state in ProcessState if state is not ProcessState.SERVING]
)
"""Every word `public_status` may give (the Prometheus state gauge has one sample each)."""
