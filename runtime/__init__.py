"""thaw's model-agnostic core: a lazy single-flight model slot, admission, lifecycle and settings.

Nothing here imports torch, diffusers or anything that knows about HTTP or Lambda events.
"""

from runtime.admission import AdmissionGate
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
from runtime.phases import PhaseRecorder
from runtime.service import Service
from runtime.settings import PreloadPolicy, Settings, SettingsError
from runtime.slot import ModelSlot, RetryPolicy
from runtime.states import SlotState

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
    "RetryPolicy",
    "Service",
    "Settings",
    "SettingsError",
    "SlotState",
    "ThawError",
    "WarmingUp",
]
