"""The container engine that builds and runs thaw's image: docker where a daemon answers, else
podman, whose storage and configuration are kept in the project's build folder.

Podman here never reads or writes the machine's own container state: `CONTAINERS_CONF`,
`CONTAINERS_STORAGE_CONF` and `CONTAINERS_REGISTRIES_CONF` point at files under `build/podman/`,
and the images, layers and run state live beside them. Three facts of a plain Debian machine shape
that configuration (found building the image on a 2-core bookworm VM):

- crun refuses a hybrid cgroup hierarchy (cgroup v1 controllers with a v2 mount), so runc runs
  the containers, with the cgroupfs manager (no systemd here);
- podman asks for more open files and processes than the hard limits allow, and every container
  then fails to start: `default_ulimits` caps them at this process's own hard limits;
- overlay storage works as root, and is the fastest driver for the 1.5 GB virtual environment.

`THAW_ENGINE=docker|podman` chooses; `THAW_PODMAN_STATE` moves the private folder.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STATE = ROOT / "build" / "podman"


class EngineMissing(RuntimeError):
    """Neither a docker daemon nor podman is available."""


@dataclass(frozen=True)
class Engine:
    """A container CLI (`docker` or `podman`) and the environment it must run with."""

    name: str
    env: Mapping[str, str]

    def argv(self, *args: str) -> list[str]:
        return [self.name, *args]

    def run(
        self,
        *args: str,
        check: bool = True,
        capture: bool = True,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.argv(*args),
            env=dict(self.env),
            capture_output=capture,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(self.argv(*args))} exited {result.returncode}:\n"
                f"{result.stdout or ''}{result.stderr or ''}"
            )
        return result

    def popen(self, args: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv(*args), env=dict(self.env), **kwargs)  # type: ignore[call-overload, no-any-return]

    def image_label(self, image: str, label: str) -> str | None:
        """A label of a local image, or None when the image (or the label) is absent."""
        result = self.run(
            "image", "inspect", "--format", f'{{{{index .Config.Labels "{label}"}}}}', image,
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            return None
        value = result.stdout.strip()
        return value if value and value != "<no value>" else None

    def remove_container(self, name: str) -> None:
        """Remove a container, killing it first if it still runs (no grace period)."""
        quick = ["--time", "0"] if self.name == "podman" else []  # docker rm -f kills at once
        self.run("rm", "--force", *quick, name, check=False, timeout=60)

    def has_image(self, image: str) -> bool:
        return self.run("image", "inspect", image, check=False).returncode == 0


def docker_answers(environ: Mapping[str, str]) -> bool:
    if not shutil.which("docker"):
        return False
    try:
        probe = subprocess.run(
            ["docker", "info"], env=dict(environ), capture_output=True, timeout=15, check=False
        )
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0


def detect(environ: Mapping[str, str] | None = None) -> Engine:
    """docker when its daemon answers, else podman configured privately; THAW_ENGINE overrides."""
    environ = dict(os.environ if environ is None else environ)
    wanted = environ.get("THAW_ENGINE", "")
    if wanted not in ("", "docker", "podman"):
        raise EngineMissing(f"THAW_ENGINE must be docker or podman, not {wanted!r}")
    if wanted == "docker" or (not wanted and docker_answers(environ)):
        return Engine("docker", environ)
    if shutil.which("podman"):
        state = Path(environ.get("THAW_PODMAN_STATE") or DEFAULT_STATE)
        return Engine("podman", {**environ, **configure_podman(state)})
    raise EngineMissing(
        "no container engine: start a docker daemon, or install podman "
        "(as root: infra/image/install-engine.sh)"
    )


# podman 4.3 lowers its own process limit to this many processes (read from /proc/<podman>/limits
# here), and runc, its child, cannot give a container more.
PODMAN_NPROC = 32768


def _ulimit(name: str, which: int, cap: int | None = None) -> str:
    _, hard = resource.getrlimit(which)
    value = cap if hard == resource.RLIM_INFINITY else min(hard, cap or hard)
    return f"{name}={value}:{value}"


def podman_files(state: Path) -> dict[str, str]:
    """The private configuration files' names and contents, for a state folder."""
    ulimits = ", ".join(
        (
            f'"{_ulimit("nofile", resource.RLIMIT_NOFILE, 1 << 20)}"',
            f'"{_ulimit("nproc", resource.RLIMIT_NPROC, PODMAN_NPROC)}"',
        )
    )
    return {
        "containers.conf": (
            "# thaw's private podman configuration (infra/image/engine.py writes it).\n"
            "[containers]\n"
            f"default_ulimits = [{ulimits}]\n"
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'tmp_dir = "{state / "tmp"}"\n'
            f'volume_path = "{state / "volumes"}"\n'
            "[network]\n"
            f'network_config_dir = "{state / "networks"}"\n'
        ),
        "storage.conf": (
            "[storage]\n"
            'driver = "overlay"\n'
            f'graphroot = "{state / "storage"}"\n'
            f'runroot = "{state / "run"}"\n'
        ),
        "registries.conf": (
            'unqualified-search-registries = ["docker.io"]\nshort-name-mode = "permissive"\n'
        ),
    }


def configure_podman(state: Path) -> dict[str, str]:
    """Write the private configuration under `state`; return the environment that selects it."""
    state.mkdir(parents=True, exist_ok=True)
    for sub in ("tmp", "volumes", "networks", "storage", "run"):
        (state / sub).mkdir(exist_ok=True)
    for name, text in podman_files(state).items():
        path = state / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    return {
        "CONTAINERS_CONF": str(state / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(state / "storage.conf"),
        "CONTAINERS_REGISTRIES_CONF": str(state / "registries.conf"),
    }
