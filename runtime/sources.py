"""Where model weights come from: a local folder or a Hugging Face model id from the local cache.

Resolution never downloads from a hub at run time: an id is looked up in the local hub cache
(`HF_HOME` / `HF_HUB_CACHE`), and a missing id is a clear error naming the id and the cache path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from runtime.phases import PhaseRecorder

_HF_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


class ModelNotFound(FileNotFoundError):
    """The model reference points at nothing usable; the message says what to do."""


def hub_cache_dir(environ: Mapping[str, str]) -> Path:
    """The Hugging Face hub cache folder, as huggingface_hub computes it."""
    if environ.get("HF_HUB_CACHE"):
        return Path(environ["HF_HUB_CACHE"])
    home = environ.get("HF_HOME") or os.path.join(
        environ.get("XDG_CACHE_HOME") or os.path.join(environ.get("HOME", "/tmp"), ".cache"),
        "huggingface",
    )
    return Path(home) / "hub"


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
    raise ModelNotFound(
        f"Hugging Face model {repo_id!r} (revision {revision!r}) is not in the local cache "
        f"{cache}; thaw does not download at run time: fetch it first "
        f"(huggingface-cli download {repo_id}) or set THAW_MODEL to a local folder"
    )
