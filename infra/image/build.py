"""Build thaw's image with whatever this machine has (`make image`).

    python -m infra.image.build [--tag thaw:cpu] [--variant cpu] [--bake tiny] [--force]

- The engine: docker where a daemon answers, else podman with private storage and configuration
  under build/podman (infra/image/engine.py).
- The base: `python:3.11.11-slim-bookworm` as the Dockerfile names it, pulled; where no registry
  answers, a stand-in built from Debian bookworm with debootstrap (infra/image/base.py).
- torch: from PyTorch's index for the variant; where that index cannot be reached (or
  `TORCH_INDEX_URL` is not given), this machine's own pip (its configuration: find-links, local
  indexes) fetches the pinned wheel into build/wheels, and a one-package index over it is served on
  127.0.0.1 for the length of the build, which runs with the host's network.
- The cache: the image is labelled with a hash of its inputs (the Dockerfile, .dockerignore, every
  file its COPY lines take, the build arguments, the base image's id); when the tagged image
  already carries that hash, nothing is built.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import html
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from infra.image import base
from infra.image.engine import Engine, detect

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
WHEELS = ROOT / "build" / "wheels"
INPUTS_LABEL = "thaw.inputs"
DEFAULT_TAG = "thaw:cpu"
MIRROR_PORT = 3141
# What .dockerignore keeps out of the context inside the copied folders.
IGNORED_PARTS = ("__pycache__",)
IGNORED_SUFFIXES = (".pyc",)


def dockerfile_arg(name: str, text: str | None = None) -> str:
    text = DOCKERFILE.read_text() if text is None else text
    match = re.search(rf"^ARG {name}=(\S+)$", text, re.M)
    if match is None:
        raise SystemExit(f"the Dockerfile has no ARG {name}")
    return match.group(1)


def copied_sources(text: str) -> list[Path]:
    """The context paths the Dockerfile's COPY lines take (not those copying from a stage)."""
    sources: list[Path] = []
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources += [ROOT / w for w in words[1:-1] if not w.startswith("--")]
    return sources


def context_files(text: str) -> list[Path]:
    files = [DOCKERFILE, ROOT / ".dockerignore"]
    for source in copied_sources(text):
        if source.is_file():
            files.append(source)
        else:
            files += sorted(
                p
                for p in source.rglob("*")
                if p.is_file()
                and not any(part in IGNORED_PARTS for part in p.parts)
                and p.suffix not in IGNORED_SUFFIXES
            )
    return sorted(set(files))


def inputs_hash(build_args: dict[str, str], base_id: str) -> str:
    """What the image is made of: changes to anything else cannot change it."""
    text = DOCKERFILE.read_text()
    digest = hashlib.sha256()
    for path in context_files(text):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    # The index a wheel came from does not change the image: the pinned wheels are the same.
    for key in sorted(k for k in build_args if not k.endswith("INDEX_URL")):
        digest.update(f"{key}={build_args[key]}\0".encode())
    digest.update(base_id.encode())
    return digest.hexdigest()[:16]


def reachable(url: str, timeout: float = 10) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def lambda_client() -> str:
    """The runtime interface client's pin, as the Dockerfile installs it."""
    match = re.search(r"awslambdaric==\S+", DOCKERFILE.read_text())
    if match is None:
        raise SystemExit("the Dockerfile installs no pinned awslambdaric")
    return match.group(0)


def project(filename: str) -> str:
    """A distribution file's PEP 503 project name."""
    return re.sub(r"[-_.]+", "-", filename.split("-", 1)[0]).lower()


def mirror_requirements(version: str, variant: str) -> None:
    """Every wheel the image installs, fetched into build/wheels/files by this machine's pip (its
    configuration: certificates, find-links, local indexes), and a PEP 503 index over them."""
    files = WHEELS / "files"
    wanted = [f"torch=={version}", lambda_client()]
    # The rie stage takes the aws-sam-cli wheel alone (its binary), not the CLI's dependencies.
    emulator = f"aws-sam-cli=={dockerfile_arg('SAM_CLI_VERSION')}"
    stamp = WHEELS / ".inputs"
    inputs = hashlib.sha256(
        (ROOT / "requirements.txt").read_bytes() + " ".join([variant, *wanted, emulator]).encode()
    ).hexdigest()
    if stamp.exists() and stamp.read_text() == inputs:
        return  # the same requirements were mirrored before: pip's resolution takes 10 s
    files.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
            "-d", str(files), "-r", str(ROOT / "requirements.txt"), *wanted,
        ],
        check=True,
    )  # fmt: skip
    subprocess.run(
        [
            sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
            "--no-deps", "-d", str(files), emulator,
        ],
        check=True,
    )  # fmt: skip
    if not list(files.glob(f"torch-{version}+{variant}-*.whl")):
        raise SystemExit(
            f"this machine's pip has no torch {version}+{variant} wheel (found "
            f"{[p.name for p in files.glob('torch-*')]}): set TORCH_INDEX_URL to one that has it"
        )
    by_project: dict[str, list[Path]] = {}
    for path in sorted(files.iterdir()):
        if path.suffix == ".whl":
            by_project.setdefault(project(path.name), []).append(path)
    simple = WHEELS / "simple"
    for name, paths in by_project.items():
        links = "".join(
            f'<a href="../../files/{html.escape(p.name)}#sha256='
            f'{hashlib.sha256(p.read_bytes()).hexdigest()}">{html.escape(p.name)}</a>\n'
            for p in paths
        )
        page = simple / name / "index.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
    listing = "".join(f'<a href="{n}/">{n}</a>\n' for n in sorted(by_project))
    (simple / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{listing}</body></html>\n")
    stamp.write_text(inputs)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """The build's own output says what pip fetched."""


@contextlib.contextmanager
def serve_wheels() -> Iterator[str]:
    """build/wheels over HTTP on loopback for the length of the build; yields the index URL.

    The index URL is a build argument, and a RUN step's cache key includes the build arguments
    it sees: a port that changed from build to build reinstalled the requirements every time. So
    the port is fixed (MIRROR_PORT), and only when it is taken is another one used.
    """
    handler = functools.partial(_QuietHandler, directory=str(WHEELS))
    try:
        server = ThreadingHTTPServer(("127.0.0.1", MIRROR_PORT), handler)
    except OSError:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    finally:
        server.shutdown()
        server.server_close()


def build(engine: Engine, tag: str, build_args: dict[str, str], inputs: str) -> None:
    args = ["build", "--network", "host", "-t", tag, "--label", f"{INPUTS_LABEL}={inputs}"]
    if engine.name == "podman":
        args += ["--layers", "--pull=never"]
    for key, value in sorted(build_args.items()):
        args += ["--build-arg", f"{key}={value}"]
    args += ["-f", str(DOCKERFILE), str(ROOT)]
    print("$", " ".join(engine.argv(*args)), flush=True)
    subprocess.run(engine.argv(*args), env=dict(engine.env), check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default=DEFAULT_TAG)
    parser.add_argument("--variant", default="cpu", help="TORCH_VARIANT: cpu, cu126, cu128...")
    parser.add_argument("--bake", default="tiny", help="BAKE_MODEL: tiny or none")
    parser.add_argument("--torch-index-url", default=None, help="TORCH_INDEX_URL")
    parser.add_argument("--mirror", action="store_true", help="install from this machine's pip")
    parser.add_argument("--force", action="store_true", help="build even if the hash matches")
    args = parser.parse_args(argv)

    engine = detect()
    text = DOCKERFILE.read_text()
    base_image = base.ensure(engine, dockerfile_arg("PYTHON_IMAGE", text))
    base_id = engine.run("image", "inspect", "--format", "{{.Id}}", base_image).stdout.strip()
    build_args = {
        "PYTHON_IMAGE": base_image,
        "TORCH_VARIANT": args.variant,
        "BAKE_MODEL": args.bake,
    }
    inputs = inputs_hash(build_args, base_id)
    if not args.force and engine.image_label(args.tag, INPUTS_LABEL) == inputs:
        print(f"{args.tag} is up to date (inputs {inputs}): nothing to build")
        return 0

    started = time.monotonic()
    version = dockerfile_arg("TORCH_VERSION", text)
    default_index = f"https://download.pytorch.org/whl/{args.variant}"
    with contextlib.ExitStack() as stack:
        if args.torch_index_url:
            build_args["TORCH_INDEX_URL"] = args.torch_index_url
        elif args.mirror or not reachable(f"{default_index}/torch/"):
            # This machine's pip reaches what the build's own pip may not (a local torch wheel, a
            # TLS proxy's certificate): it fetches, and the build installs from loopback.
            print(f"installing from a mirror of this machine's pip ({default_index}: unreachable)")
            mirror_requirements(version, args.variant)
            index = stack.enter_context(serve_wheels())
            build_args["TORCH_INDEX_URL"] = build_args["PIP_INDEX_URL"] = index
        build(engine, args.tag, build_args, inputs)
    print(f"{args.tag} built in {time.monotonic() - started:.0f} s (inputs {inputs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
