"""A stand-in for the Dockerfile's base image, for machines that cannot reach a registry.

A real build starts from `python:3.11.11-slim-bookworm` (Docker Hub's official image: Debian
bookworm, CPython 3.11.11 built into /usr/local). Where no registry answers, this builds a
stand-in from Debian bookworm's own packages with debootstrap, from the apt mirror this machine
is configured with: Debian's python3.11 (3.11.2) with venv and pip, `python` on PATH, the same
ENV as the official image, and tags it with the official name, so the same Dockerfile builds
offline. The image carries the label `thaw.stand-in=debootstrap` so nobody mistakes it for the
real one.

    python -m infra.image.base [--tag python:3.11.11-slim-bookworm] [--force]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from infra.image.engine import Engine, detect

DEFAULT_TAG = "python:3.11.11-slim-bookworm"
SUITE = "bookworm"
# What the official slim image has that matters here: the interpreter, venv (ensurepip), pip,
# certificates for pip's TLS, and /etc/services & co.
PACKAGES = (
    "python3.11",
    "python3.11-venv",
    "python3-pip",
    "python-is-python3",
    "ca-certificates",
    "netbase",
)
STAND_IN_LABEL = "thaw.stand-in"
FALLBACK_MIRROR = "http://deb.debian.org/debian"


def apt_mirror(etc: Path = Path("/etc/apt")) -> str:
    """The Debian archive this machine's apt uses for bookworm (deb822 or one-line sources)."""
    for path in sorted((etc / "sources.list.d").glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = dict(
                line.split(":", 1)
                for line in stanza.splitlines()
                if re.match(r"^[A-Za-z-]+:", line)
            )
            suites = fields.get("Suites", "").split()
            uris = fields.get("URIs", "").split()
            if SUITE in suites and uris and fields.get("Types", "deb").strip() == "deb":
                return uris[0].strip()
    for path in [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]:
        if path.exists():
            for line in path.read_text().splitlines():
                match = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+" + SUITE + r"\s", line)
                if match:
                    return match.group(1)
    return FALLBACK_MIRROR


def qualified(tag: str) -> str:
    """`python:3.11` is `docker.io/library/python:3.11` to docker and podman alike."""
    first = tag.split("/", 1)[0]
    if "/" not in tag:
        return f"docker.io/library/{tag}"
    if "." not in first and ":" not in first and first != "localhost":
        return f"docker.io/{tag}"
    return tag


def debootstrap(rootfs: Path, mirror: str) -> None:
    if not shutil.which("debootstrap"):
        raise SystemExit("debootstrap is missing: apt-get install debootstrap")
    subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(rootfs),
            mirror,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    # What the official slim image leaves out too: package lists, caches, documentation.
    for leftover in (
        "var/lib/apt/lists",
        "var/cache/apt",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
    ):
        target = rootfs / leftover
        if target.exists():
            shutil.rmtree(target)
            target.mkdir()
    (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True)
    for log in (rootfs / "var/log").rglob("*"):
        if log.is_file():
            log.unlink()


def build(engine: Engine, tag: str) -> str:
    mirror = apt_mirror()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="thaw-base-", dir=_scratch()) as tmp:
        rootfs = Path(tmp) / "rootfs"
        print(f"stand-in base: debootstrap {SUITE} from {mirror}", flush=True)
        debootstrap(rootfs, mirror)
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-c", "."],
            stdout=subprocess.PIPE,
        )
        changes = [
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV LANG=C.UTF-8",
            f"LABEL {STAND_IN_LABEL}=debootstrap",
            'CMD ["python3"]',
        ]
        args = ["import"]
        for change in changes:
            args += ["--change", change]
        imported = subprocess.run(
            engine.argv(*args, "-", qualified(tag)),
            env=dict(engine.env),
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            check=False,
        )
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise SystemExit(f"importing the stand-in base failed:\n{imported.stderr}")
    print(f"stand-in base {qualified(tag)} built in {time.monotonic() - started:.0f} s", flush=True)
    return qualified(tag)


def _scratch() -> Path:
    path = Path(__file__).resolve().parents[2] / "build" / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def ensure(engine: Engine, tag: str = DEFAULT_TAG, *, force: bool = False) -> str:
    """The base image present locally: pulled when a registry answers, else the stand-in."""
    name = qualified(tag)
    if not force and engine.has_image(name):
        return name
    if not force:
        pulled = engine.run("pull", "--quiet", name, check=False, timeout=600)
        if pulled.returncode == 0:
            return name
        print(f"cannot pull {name}; building a stand-in with debootstrap", flush=True)
    return build(engine, tag)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default=DEFAULT_TAG)
    parser.add_argument("--force", action="store_true", help="build the stand-in even if present")
    args = parser.parse_args(argv)
    engine = detect()
    if args.force:
        build(engine, args.tag)
    else:
        print(ensure(engine, args.tag))
    return 0


if __name__ == "__main__":
    sys.exit(main())
