"""runtime.cpus: affinity capped by the cgroup's CPU quota, on fake /proc and /sys trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime import cpus


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_cgroup_v2_quota_of_a_pod_with_one_cpu(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "proc/self/cgroup": "0::/kubepods/pod1/c1\n",
            "sys/fs/cgroup/cpu.max": "max 100000\n",
            "sys/fs/cgroup/kubepods/pod1/c1/cpu.max": "100000 100000\n",
        },
    )
    assert cpus.cgroup_quota(root) == 1.0
    assert cpus.available(root, affinity=16) == 1.0


def test_the_smallest_quota_on_the_path_counts(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "proc/self/cgroup": "0::/a/b\n",
            "sys/fs/cgroup/a/cpu.max": "50000 100000\n",
            "sys/fs/cgroup/a/b/cpu.max": "max 100000\n",
        },
    )
    assert cpus.available(root, affinity=4) == 0.5


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "proc/self/cgroup": "4:memory:/x\n3:cpu,cpuacct:/docker/abc\n",
            "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "150000\n",
            "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
            "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
            "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        },
    )
    assert cpus.cgroup_quota(root) == 1.5
    assert cpus.available(root, affinity=1) == 1.0


@pytest.mark.parametrize(
    "files",
    [
        {},  # no /proc: another OS
        {"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/cpu.max": "max 100000\n"},
        {"proc/self/cgroup": "0::/\n"},  # no cpu controller enabled
        {"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/cpu.max": "garbage\n"},
        {"proc/self/cgroup": "garbage\n"},  # a line that is not id:controllers:path
    ],
)
def test_no_quota_leaves_the_affinity(tmp_path: Path, files: dict[str, str]) -> None:
    root = tree(tmp_path, files)
    assert cpus.cgroup_quota(root) is None
    assert cpus.available(root, affinity=3) == 3.0


def test_this_machine_answers_a_positive_figure() -> None:
    assert cpus.available() > 0


@pytest.mark.parametrize(
    ("environ", "cpus_available", "expected"),
    [
        ({}, 1.0, True),  # auto, one CPU: from the lifespan
        ({}, 0.5, True),  # a fraction of one (a small Lambda function, a pod's quota)
        ({}, 2.0, False),  # auto, two: side by side
        ({"THAW_WORKER_START": "early"}, 1.0, False),
        ({"THAW_WORKER_START": "after_listen"}, 8.0, True),
        ({"THAW_PRELOAD": "eager"}, 1.0, False),  # eager waits for the load before listening
        ({"THAW_PRELOAD": "eager", "THAW_WORKER_START": "after_listen"}, 1.0, False),
    ],
)
def test_when_the_worker_starts_from_the_lifespan(
    environ: dict[str, str], cpus_available: float, expected: bool
) -> None:
    from handler.early import starts_late
    from runtime.settings import Settings

    assert starts_late(Settings.from_env(environ), cpus_available) is expected
