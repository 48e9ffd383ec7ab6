"""How much CPU this process may use: its affinity mask, capped by its cgroup's CPU quota.

A Kubernetes pod with `limits.cpu: 1` on a 16-core node sees 16 CPUs in its affinity mask but is
throttled to one CPU's time by the CFS quota of its cgroup (`cpu.max` in cgroup v2,
`cpu.cfs_quota_us` / `cpu.cfs_period_us` in v1). `os.cpu_count()` says 16 there; what two busy
processes actually get is one CPU between them. The quota of every ancestor cgroup applies too, so
the smallest one along the path counts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

ROOT = Path("/")


def available(root: Path = ROOT, affinity: int | None = None) -> float:
    """The CPUs this process may use at once: min(affinity mask, cgroup quota)."""
    if affinity is None:
        affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
        affinity = affinity or os.cpu_count() or 1
    quota = cgroup_quota(root)
    return float(affinity) if quota is None else min(float(affinity), quota)


def cgroup_quota(root: Path = ROOT) -> float | None:
    """The smallest CPU quota (in CPUs) on this process's cgroup path, None when unlimited or
    unknown (no cgroup filesystem, another OS)."""
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:  # not hierarchy-id:controllers:path; nothing to read from it
            continue
        _, controllers, path = fields
        if controllers == "":  # cgroup v2: one unified hierarchy
            quotas += _along(root / "sys/fs/cgroup", path, _v2_quota)
        elif "cpu" in controllers.split(","):
            for mount in (controllers, "cpu", "cpu,cpuacct"):
                base = root / "sys/fs/cgroup" / mount
                if base.is_dir():
                    quotas += _along(base, path, _v1_quota)
                    break
    return min(quotas) if quotas else None


def _along(base: Path, path: str, read: Callable[[Path], float | None]) -> list[float]:
    """Each quota from the process's own cgroup up to the hierarchy's root."""
    found: list[float] = []
    folder = base / path.strip("/")
    while True:
        quota = read(folder)
        if quota is not None:
            found.append(quota)
        if folder == base or base not in folder.parents:
            return found
        folder = folder.parent


def _v2_quota(folder: Path) -> float | None:
    try:
        limit, period = (folder / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if limit == "max" else int(limit) / int(period)


def _v1_quota(folder: Path) -> float | None:
    try:
        limit = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if limit <= 0 or period <= 0 else limit / period
