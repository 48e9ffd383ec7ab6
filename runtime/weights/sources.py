"""Where model weights come from: a local folder (a volume, or baked into the image), a Hugging
Face model id from the local cache, or `s3://bucket/prefix`.

Resolution never downloads from a hub at run time: an id is looked up in the local hub cache
(`HF_HOME` / `HF_HUB_CACHE`), and a missing id is a clear error naming the id and the cache path.
An `s3://` reference is fetched once per environment into the cache (`runtime.weights.fetch`).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.observe.phases import PhaseRecorder

if TYPE_CHECKING:
    from runtime.settings import Settings
    from runtime.weights.progress import Progress

log = logging.getLogger("thaw.sources")

_HF_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


class ModelNotFound(FileNotFoundError):
    """The model reference points at nothing usable; the message says what to do."""


def looks_like_hub_id(ref: str) -> bool:
    return bool(_HF_ID.match(ref)) and not ref.startswith((".", "/", "~"))


def resolve_local(ref: str, phases: PhaseRecorder, *, hub_cache: Path, revision: str) -> Path:
    """Turn a model reference into a local folder holding the model."""
    with phases.phase("resolve"):
        path = Path(ref).expanduser()
        if path.is_dir():
            return path
        if path.exists():
            raise ModelNotFound(f"model path {ref!r} is a file, expected a folder")
        if looks_like_hub_id(ref):
            return _from_hub_cache(ref, hub_cache, revision)
        raise ModelNotFound(f"model folder {ref!r} does not exist")


def _from_hub_cache(repo_id: str, cache: Path, revision: str) -> Path:
    # Read the cache's own layout (models--org--name/refs/<rev> -> snapshots/<sha>) rather than
    # asking huggingface_hub, whose offline lookups still consult the network settings.
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    ref_file = repo_dir / "refs" / revision
    # A revision without a ref file may be a commit hash given directly.
    commit = ref_file.read_text(encoding="utf-8").strip() if ref_file.is_file() else revision
    snapshot = repo_dir / "snapshots" / commit
    if snapshot.is_dir():
        return snapshot
    held = sorted(p.name for p in (repo_dir / "snapshots").glob("*") if p.is_dir())
    if held and not ref_file.is_file() and not re.fullmatch(r"[0-9a-f]{40}", revision):
        # Downloaded by commit (huggingface_hub writes refs/<name> only for a branch or tag),
        # or the ref was not copied: the weights are here, the revision's name is not.
        raise ModelNotFound(
            f"Hugging Face model {repo_id!r} is in the local cache {cache}, but it has no "
            f"refs/{revision} naming one of its snapshots ({', '.join(held)}): set "
            "THAW_MODEL_REVISION to the snapshot's commit"
        )
    raise ModelNotFound(
        f"Hugging Face model {repo_id!r} (revision {revision!r}) is not in the local cache "
        f"{cache}; thaw does not download at run time: fetch it first "
        f"(huggingface-cli download {repo_id}) or set THAW_MODEL to a local folder"
    )


def is_s3(ref: str) -> bool:
    return ref.startswith("s3://")


def resolve_model(
    ref: str,
    phases: PhaseRecorder,
    settings: Settings,
    *,
    cancel: threading.Event | None = None,
    s3_client: Any = None,
) -> Path:
    """The local folder for any model reference: a folder, a hub id, or `s3://` (fetched into
    `settings.cache_dir` once, as the phase `fetch`, with progress in the phase's detail)."""
    if not is_s3(ref):
        return resolve_local(
            ref, phases, hub_cache=settings.hub_cache, revision=settings.model_revision
        )
    from runtime.weights.fetch import S3Options, fetch_to_cache

    options = S3Options(
        endpoint_url=settings.s3_endpoint_url,
        concurrency=settings.s3_concurrency,
        part_size=settings.s3_part_mb * 1024 * 1024,
        client=s3_client,
    )
    with phases.phase("fetch"):
        report = _FetchReport(phases)
        result = fetch_to_cache(ref, settings.cache_dir, options, listener=report, cancel=cancel)
        phases.progress("fetch", cached=result.cached, path=str(result.path))
        return result.path


class _FetchReport:
    """Progress into the `fetch` phase's detail (every update) and the log (every few seconds)."""

    def __init__(self, phases: PhaseRecorder, log_every_s: float = 5.0) -> None:
        self._phases = phases
        self._log_every = log_every_s
        self._logged_at = float("-inf")

    def __call__(self, progress: Progress) -> None:
        detail = progress.as_detail()
        self._phases.progress("fetch", **detail)
        if progress.seconds - self._logged_at >= self._log_every:
            self._logged_at = progress.seconds
            log.info("fetch progress", extra=detail)


BACKGROUND_NICE = 10


def _yield_cpu() -> None:
    """Lower the calling thread's CPU priority (Linux threads carry their own nice value).

    The resolve thread mostly waits on disk or network; when it does need the CPU (copying pages,
    hashing) it should take what the imports and the server's own start leave, not compete with
    them for a container's one or two cores.
    """
    try:
        thread = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, max(current, BACKGROUND_NICE))
    except (AttributeError, OSError):  # not Linux, or not allowed: run at the usual priority
        pass


class BackgroundResolve:
    """Resolve a model in a thread of its own, so a download overlaps the heavy imports.

    `result()` joins and returns the folder or raises what the resolve raised; `cancel()` asks a
    running download to stop (the load failed elsewhere) and waits for it, so a retried load never
    races a leftover download.
    """

    def __init__(self, resolve: Callable[[threading.Event], Path]) -> None:
        self._cancel = threading.Event()
        self._path: Path | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(resolve,), name="thaw-resolve", daemon=True
        )
        self._thread.start()

    def _run(self, resolve: Callable[[threading.Event], Path]) -> None:
        _yield_cpu()
        try:
            self._path = resolve(self._cancel)
        except BaseException as exc:  # handed to the caller of result()
            self._error = exc

    def result(self) -> Path:
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._path is None:
            raise ModelNotFound("the model resolved to nothing")
        return self._path

    def cancel(self) -> None:
        self._cancel.set()
        self._thread.join()
