"""`python -m runtime`: bake model weights into a folder (an image build), or write a manifest.

    python -m runtime fetch s3://bucket/models/sd15 --to /opt/thaw/model
    python -m runtime fetch org/name --to /opt/thaw/model      # from the local Hugging Face cache
    python -m runtime manifest ./model                          # writes ./model/thaw-manifest.json

`fetch` writes the folder atomically (it appears complete or not at all) and shows a progress bar
on stderr. S3 settings come from the usual AWS variables plus THAW_S3_ENDPOINT_URL,
THAW_S3_CONCURRENCY and THAW_S3_PART_MB; the options below override them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from runtime.observe.phases import PhaseRecorder
from runtime.settings import Settings, SettingsError
from runtime.weights.cache import InsufficientSpace, publish
from runtime.weights.integrity import MANIFEST_NAME, IntegrityError, build_manifest
from runtime.weights.progress import MB, Progress
from runtime.weights.sources import ModelNotFound, is_s3, resolve_local


class ProgressBar:
    """A one-line bar on a terminal; a line every few seconds otherwise (build logs)."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self._stream = stream
        self._width = width
        self._tty = stream.isatty()
        self._printed_at = float("-inf")

    def __call__(self, progress: Progress) -> None:
        total = max(progress.bytes_total, 1)
        share = progress.bytes_done / total
        filled = int(share * self._width)
        eta = progress.eta_s
        line = (
            f"[{'#' * filled}{'.' * (self._width - filled)}] {share:6.1%} "
            f"{progress.bytes_done / MB:,.0f}/{progress.bytes_total / MB:,.0f} MB "
            f"{progress.files_done}/{progress.files_total} files {progress.rate_mb_s:,.1f} MB/s"
            + ("" if eta is None or share >= 1 else f" eta {eta:,.0f}s")
        )
        if self._tty:
            self._stream.write("\r" + line)
            if share >= 1:
                self._stream.write("\n")
        elif progress.seconds - self._printed_at >= 5 or share >= 1:
            self._printed_at = progress.seconds
            self._stream.write(line + "\n")
        self._stream.flush()


def main(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch", help="copy a model (s3://, hub id, folder) into --to")
    fetch.add_argument("model", help="s3://bucket/prefix, a Hugging Face id, or a folder")
    fetch.add_argument("--to", required=True, type=Path, help="folder to create")
    fetch.add_argument("--endpoint-url", help="S3-compatible endpoint (THAW_S3_ENDPOINT_URL)")
    fetch.add_argument("--concurrency", type=int, help="parallel ranges (THAW_S3_CONCURRENCY)")
    fetch.add_argument("--part-mb", type=int, help="range size in MiB (THAW_S3_PART_MB)")
    fetch.add_argument("--quiet", action="store_true", help="no progress bar")
    manifest = commands.add_parser("manifest", help=f"write DIR/{MANIFEST_NAME} (sha256 sums)")
    manifest.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ if environ is None else environ)
        if args.command == "manifest":
            return _manifest(args.folder)
        return _fetch(args, settings)
    except (
        SettingsError,
        ModelNotFound,
        IntegrityError,
        InsufficientSpace,
        FileExistsError,
        RuntimeError,
    ) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _fetch(args: argparse.Namespace, settings: Settings) -> int:
    dest: Path = args.to
    if is_s3(args.model):
        from runtime.weights.fetch import S3Options, fetch_to_folder

        options = S3Options(
            endpoint_url=args.endpoint_url or settings.s3_endpoint_url,
            concurrency=args.concurrency or settings.s3_concurrency,
            part_size=(args.part_mb or settings.s3_part_mb) * 1024 * 1024,
        )
        listener = None if args.quiet else ProgressBar(sys.stderr)
        result = fetch_to_folder(args.model, dest, options, listener=listener)
        rate = result.downloaded_bytes / MB / result.seconds if result.seconds else 0.0
        print(
            f"fetched {args.model} into {dest}: {result.downloaded_bytes / MB:,.1f} MB "
            f"in {result.seconds:.1f}s ({rate:,.1f} MB/s)",
            file=sys.stderr,
        )
        return 0
    source = resolve_local(
        args.model, PhaseRecorder(), hub_cache=settings.hub_cache, revision=settings.model_revision
    )
    if dest.exists():
        raise FileExistsError(f"{dest} already exists; remove it or choose another --to")

    # Hub snapshots are symlinks into blobs/: copy the files they point at.
    def copy(tmp: Path) -> None:
        shutil.copytree(source, tmp, symlinks=False, dirs_exist_ok=True)

    publish(dest, copy)
    print(f"copied {source} into {dest}", file=sys.stderr)
    return 0


def _manifest(folder: Path) -> int:
    if not folder.is_dir():
        raise ModelNotFound(f"{folder} is not a folder")
    data = build_manifest(folder)
    (folder / MANIFEST_NAME).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {folder / MANIFEST_NAME} ({len(data['files'])} files)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
