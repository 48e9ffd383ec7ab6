"""thaw's model-agnostic core: a lazy single-flight model slot, admission, lifecycle and settings.

Nothing here imports torch, diffusers or anything that knows about HTTP or Lambda events. The
names below are imported on first use, so that importing one small module (`runtime.worker`, which
`python -m handler` starts before anything else) does not import the whole core.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.errors import (
        DeadlineExceeded,
        Draining,
        InvalidRequest,
        LoadFailed,
        Overloaded,
        PayloadTooLarge,
        ThawError,
        WarmingUp,
    )
    from runtime.lifecycle.admission import AdmissionGate
    from runtime.lifecycle.service import Service
    from runtime.lifecycle.slot import ModelSlot, RetryPolicy
    from runtime.lifecycle.states import ProcessState, SlotState
    from runtime.observe.phases import PhaseRecorder
    from runtime.settings import PreloadPolicy, Settings, SettingsError

_HOMES = {
    "AdmissionGate": "runtime.lifecycle.admission",
    "DeadlineExceeded": "runtime.errors",
    "Draining": "runtime.errors",
    "InvalidRequest": "runtime.errors",
    "LoadFailed": "runtime.errors",
    "Overloaded": "runtime.errors",
    "PayloadTooLarge": "runtime.errors",
    "ThawError": "runtime.errors",
    "WarmingUp": "runtime.errors",
    "PhaseRecorder": "runtime.observe.phases",
    "Service": "runtime.lifecycle.service",
    "PreloadPolicy": "runtime.settings",
    "Settings": "runtime.settings",
    "SettingsError": "runtime.settings",
    "ModelSlot": "runtime.lifecycle.slot",
    "RetryPolicy": "runtime.lifecycle.slot",
    "ProcessState": "runtime.lifecycle.states",
    "SlotState": "runtime.lifecycle.states",
}

__all__ = [
    "AdmissionGate",
    "DeadlineExceeded",
    "Draining",
    "InvalidRequest",
    "LoadFailed",
    "ModelSlot",
    "Overloaded",
    "PayloadTooLarge",
    "PhaseRecorder",
    "PreloadPolicy",
    "ProcessState",
    "RetryPolicy",
    "Service",
    "Settings",
    "SettingsError",
    "SlotState",
    "ThawError",
    "WarmingUp",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'runtime' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
