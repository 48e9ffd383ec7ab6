"""A Hugging Face hub cache folder, laid out as huggingface_hub writes it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(root: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """`models--org--name/` with content-addressed `blobs/`, `snapshots/<commit>/` of relative
    symlinks into them, and `refs/main` naming the commit. Returns `root`."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    for relpath, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / COMMIT / relpath
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return root


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (dotfiles left out), by relative path."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }
