"""The states of a model slot."""

from __future__ import annotations

from enum import StrEnum


class SlotState(StrEnum):
    """Where a model slot stands. Probes and `/health` report these."""

    COLD = "cold"
    """No model in memory and no load running; the next demand starts one."""

    LOADING = "loading"
    """A load is running (or backing off between attempts); callers wait on it."""

    READY = "ready"
    """The model is in memory and serves requests."""

    FAILED = "failed"
    """Every attempt failed; the reason is kept and a fresh attempt may start after a cool-down."""

    DRAINING = "draining"
    """The process is stopping: accepted work finishes, new work is refused."""

    STOPPED = "stopped"
    """The model was released for good; the process is about to exit."""

    @property
    def public_name(self) -> str:
        """The word probes see; a loading slot is "warming_up", as operators expect."""
        return "warming_up" if self is SlotState.LOADING else self.value
