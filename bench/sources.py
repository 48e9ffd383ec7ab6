"""Time to ready for each place the weights can live, measured in one run (medians, interleaved).

    python -m bench.sources [--runs 3] [--model DIR] [--part-mb 16] [--only folder,hub,...]

For one model folder (default: the tiny model; `python -m bench.make_sd15` builds an SD-1.5-sized
one) it spawns `python -m handler` and times spawn -> /readyz 200 with the weights in:

- `folder`: a local folder (baked into the image, or a mounted volume), the baseline;
- `hub`: a Hugging Face id in a hub-cache layout (hard links to the same files);
- `s3-cold`: `s3://` on moto's S3 server over loopback HTTP, empty cache (downloads everything);
- `s3-warm`: `s3://` again with the cache from the cold run (lists the prefix, downloads nothing).

It prints ratios against `folder` and the load phases (import, fetch/resolve, build), which show
the download overlapping the imports. Loopback S3 is not a network: it measures thaw's own cost
(ranged parallel writes, verification, cache), not a region's bandwidth.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import free_port, median, python, spawn, stop, wait_status
from tests.support.hub_cache import COMMIT
from tests.support.s3_server import S3Server

REPO_ID = "bench/model"


def hub_layout(model: Path, root: Path) -> Path:
    """A hub cache whose snapshot links to blobs that are hard links to the model's files."""
    repo = root / ("models--" + REPO_ID.replace("/", "--"))
    for path in sorted(p for p in model.rglob("*") if p.is_file()):
        relpath = path.relative_to(model)
        blob = repo / "blobs" / relpath.as_posix().replace("/", "_")
        blob.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, blob)
        except OSError:
            shutil.copy2(path, blob)
        link = repo / "snapshots" / COMMIT / relpath
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return root


def upload(s3: S3Server, model: Path, prefix: str) -> None:
    from boto3.s3.transfer import TransferConfig

    client = s3.client()
    client.create_bucket(Bucket="bench")
    config = TransferConfig(multipart_chunksize=64 * 1024 * 1024)
    for path in sorted(p for p in model.rglob("*") if p.is_file()):
        relpath = path.relative_to(model).as_posix()
        if not relpath.startswith("."):
            client.upload_file(str(path), "bench", f"{prefix}/{relpath}", Config=config)


def time_to_ready(env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    port = free_port()
    started = time.monotonic()
    proc = spawn([python(), "-m", "handler"], {**env, "THAW_PORT": str(port)})
    try:
        ready = wait_status(f"http://127.0.0.1:{port}/readyz", started, timeout=900, interval=0.02)
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()
        return ready, {p["name"]: p for p in health["phases"]}
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", type=Path, default=Path.home() / ".cache/thaw/tiny-sd")
    parser.add_argument("--part-mb", type=int, default=16)
    parser.add_argument("--only", default="folder,hub,s3-cold,s3-warm", help="sources to time")
    args = parser.parse_args()
    model: Path = args.model
    size_mb = sum(p.stat().st_size for p in model.rglob("*") if p.is_file()) / 1e6
    work = Path(tempfile.mkdtemp(prefix="thaw-bench-sources-", dir=model.parent))
    s3 = S3Server(work / "s3.log").start()
    try:
        hub = hub_layout(model, work / "hub")
        upload(s3, model, "model")
        base = {"THAW_LOG_LEVEL": "warning", "THAW_S3_PART_MB": str(args.part_mb), **s3.env()}
        sources = {
            "folder": {"THAW_MODEL": str(model)},
            "hub": {"THAW_MODEL": REPO_ID, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"},
            "s3-cold": {"THAW_MODEL": "s3://bench/model"},
            "s3-warm": {"THAW_MODEL": "s3://bench/model"},
        }
        wanted = args.only.split(",")
        sources = {name: env for name, env in sources.items() if name in wanted}
        samples: dict[str, list[tuple[float, dict[str, Any]]]] = {k: [] for k in sources}
        for run in range(args.runs):
            cache = work / f"cache-{run}"
            for name, env in sources.items():  # interleaved, so drift hits every source alike
                samples[name].append(time_to_ready({**base, **env, "THAW_CACHE_DIR": str(cache)}))
            shutil.rmtree(cache, ignore_errors=True)
    finally:
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)

    def phase(name: str, source: str) -> float:
        values = [p[name]["seconds"] for _, p in samples[source] if name in p]
        return median(values) if values else float("nan")

    baseline = median([s for s, _ in samples["folder"]])
    print(
        f"model {model.name}: {size_mb:,.0f} MB; {args.runs} runs; "
        f"{os.cpu_count()} CPUs, {platform.machine()}"
    )
    print(
        f"{'source':8} {'ready s':>8} {'x folder':>8} {'import s':>8} {'fetch s':>8} {'build s':>8}"
    )
    for name in sources:
        ready = median([s for s, _ in samples[name]])
        fetch = phase("fetch", name) if name.startswith("s3") else phase("resolve", name)
        print(
            f"{name:8} {ready:8.2f} {ready / baseline:8.2f} {phase('import', name):8.2f} "
            f"{fetch:8.2f} {phase('build', name):8.2f}"
        )


if __name__ == "__main__":
    main()
