"""CPython's cyclic garbage collector during a model load: paused, then the survivors frozen.

A load creates hundreds of thousands of objects that live as long as the process: the functions
and classes of ~3,000 imported modules, then the pipeline's modules and parameters. The collector
runs full collections along the way, each one traversing everything allocated so far, and finds
next to nothing to free. Measured on the 2-core dev VM, importing torch and diffusers and loading
the SD-1.5-sized fp16 pipeline: 692,455 tracked objects afterwards, 7 full collections during the
load, and one more full collection costs 0.76 s to free 9,621 objects (no change in RSS). With the
collector paused the same load took a median 6.35 s against 8.36 s (4 interleaved runs each,
2026-11-29).

So a load runs with the collector off, and on success what survived is frozen (`gc.freeze`: moved
to a permanent generation that later collections skip, so they stay cheap while requests run).
The price is the few cycles the load left as garbage, kept until the model is released:
`unfreeze()` hands everything back to the collector first, so the cycles inside a released
pipeline are collected rather than kept for good.

The collector is process-wide, so this state is too: nested or concurrent pauses count, and the
collector comes back on only when the last one ends, and only if it was on before the first.
"""

from __future__ import annotations

import functools
import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

_lock = threading.Lock()
_paused = 0  # pauses in progress
_was_enabled = False  # the collector's state before the first of them
_succeeded = False  # whether one of them ended well (then the survivors are frozen)


@contextmanager
def paused() -> Iterator[None]:
    """Run the block with the collector off; if it returns normally, freeze what survived."""
    global _paused, _was_enabled, _succeeded
    with _lock:
        if _paused == 0:
            _was_enabled = gc.isenabled()
            _succeeded = False
            gc.disable()
        _paused += 1
    ok = False
    try:
        yield
        ok = True
    finally:
        with _lock:
            _paused -= 1
            _succeeded = _succeeded or ok
            if _paused == 0:
                if _succeeded:
                    gc.freeze()
                if _was_enabled:
                    gc.enable()


def pausing(func: Callable[P, R]) -> Callable[P, R]:
    """`func`, run under `paused()`: for wrapping a model loader."""

    @functools.wraps(func)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with paused():
            return func(*args, **kwargs)

    return run


def unfreeze() -> None:
    """Hand frozen objects back to the collector: call before releasing a loaded model."""
    gc.unfreeze()
