"""A bare Lambda handler with SnapStart hooks, for testing the emulator's restore protocol.

Each hook prints a line the test reads back; `THAW_TEST_HOOK_FAILS=before|after` makes that hook
raise.
"""

from __future__ import annotations

import os
from typing import Any

from snapshot_restore_py import register_after_restore, register_before_snapshot

print("test handler: init", flush=True)


def _before() -> None:
    print("test handler: before snapshot", flush=True)
    if os.environ.get("THAW_TEST_HOOK_FAILS") == "before":
        raise RuntimeError("the before-snapshot hook failed on purpose")


def _after() -> None:
    print("test handler: after restore", flush=True)
    if os.environ.get("THAW_TEST_HOOK_FAILS") == "after":
        raise RuntimeError("the after-restore hook failed on purpose")


register_before_snapshot(_before)
register_after_restore(_after)


def handler(event: Any, context: Any) -> Any:
    return {"echo": event}
