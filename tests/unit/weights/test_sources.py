"""Model sources without a network: hub-cache layout, s3:// parsing, integrity, atomic folders."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
from pathlib import Path

import pytest

from runtime.observe.phases import PhaseRecorder
from runtime.settings import Settings, SettingsError
from runtime.weights.cache import DiskUsage, InsufficientSpace, check_space, publish
from runtime.weights.fetch import cache_folder, content_digest
from runtime.weights.integrity import (
    IntegrityError,
    RemoteFile,
    build_manifest,
    etag_matches,
    parse_manifest,
    verify_file,
)
from runtime.weights.progress import ProgressMeter
from runtime.weights.s3 import FetchError, S3Location, safe_relpath
from runtime.weights.sources import BACKGROUND_NICE, BackgroundResolve, ModelNotFound, resolve_local
from tests.support.hub_cache import COMMIT, hub_cache

MiB = 1024 * 1024


def test_a_hub_id_resolves_to_its_snapshot_through_refs(tmp_path: Path) -> None:
    cache = hub_cache(tmp_path, "org/model", {"model_index.json": b"{}", "unet/c.json": b"1"})
    path = resolve_local("org/model", PhaseRecorder(), hub_cache=cache, revision="main")
    assert path == cache / "models--org--model" / "snapshots" / COMMIT
    assert (path / "unet" / "c.json").read_bytes() == b"1"
    by_commit = resolve_local("org/model", PhaseRecorder(), hub_cache=cache, revision=COMMIT)
    assert by_commit == path


def test_a_missing_hub_id_names_the_id_and_the_cache(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound) as missing:
        resolve_local("org/absent", PhaseRecorder(), hub_cache=tmp_path, revision="main")
    assert "'org/absent'" in str(missing.value)
    assert str(tmp_path) in str(missing.value)


def test_s3_references_parse_and_map_to_a_cache_folder(tmp_path: Path) -> None:
    location = S3Location.parse("s3://bucket/models/sd15/")
    assert location == S3Location("bucket", "models/sd15")
    assert location.key("unet/w.bin") == "models/sd15/unet/w.bin"
    folder = cache_folder(tmp_path, location, None)
    assert folder.parent == tmp_path / "s3"
    assert folder.name.startswith("bucket--models--sd15-")  # readable, then the hash
    assert S3Location.parse("s3://bucket").prefix == ""
    with pytest.raises(ValueError, match="names no bucket"):
        S3Location.parse("s3:///x")


def test_the_s3_cache_folder_is_one_per_endpoint_bucket_and_prefix(tmp_path: Path) -> None:
    places = [
        ("b", "a/b", None),
        ("b", "a--b", None),
        ("b", "a_b", None),
        ("b", "a b", None),
        ("b-a", "b", None),
        ("b", "a/b", "http://127.0.0.1:9000"),
        ("b", "a/b", "https://minio.example"),
        ("b", "", None),
        ("b", "x" * 500 + "1", None),
        ("b", "x" * 500 + "2", None),
    ]
    folders = [cache_folder(tmp_path, S3Location(*place[:2]), place[2]) for place in places]
    assert len(set(folders)) == len(places)
    assert all(len(folder.name) < 120 for folder in folders)
    # The same place always maps to the same folder (a warm start finds its snapshot).
    assert cache_folder(tmp_path, S3Location("b", "a/b"), "http://127.0.0.1:9000/") == folders[5]


def test_keys_that_would_leave_the_model_folder_are_refused() -> None:
    assert safe_relpath("unet/w.bin") == "unet/w.bin"
    for bad in ("../etc/passwd", "a/../../b", "/abs"):
        with pytest.raises(FetchError, match="would leave the model folder"):
            safe_relpath(bad)


def test_the_content_digest_changes_with_the_content() -> None:
    one = [RemoteFile("a", 1, "e1")]
    assert content_digest(one) == content_digest([RemoteFile("a", 1, "e1")])
    assert content_digest(one) != content_digest([RemoteFile("a", 1, "e2")])


def _multipart_etag(data: bytes, part: int) -> str:
    digests = b"".join(hashlib.md5(data[i : i + part]).digest() for i in range(0, len(data), part))
    return f"{hashlib.md5(digests).hexdigest()}-{-(-len(data) // part)}"


def test_etags_are_checked_single_and_multipart(tmp_path: Path) -> None:
    data = os.urandom(12 * MiB + 5)
    path = tmp_path / "w.bin"
    path.write_bytes(data)
    assert etag_matches(path, hashlib.md5(data).hexdigest(), len(data))
    assert not etag_matches(path, hashlib.md5(b"other").hexdigest(), len(data))
    assert etag_matches(path, f'"{_multipart_etag(data, 5 * MiB)}"', len(data))
    assert etag_matches(path, _multipart_etag(data, 8 * MiB), len(data))
    wrong = _multipart_etag(data[:-1] + b"x", 5 * MiB)
    assert not etag_matches(path, wrong, len(data))


def test_a_wrong_size_or_sha256_is_an_integrity_error(tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(b"hello")
    good = hashlib.sha256(b"hello").hexdigest()
    verify_file(path, RemoteFile("w.bin", 5, sha256=good))
    with pytest.raises(IntegrityError, match="got 5 bytes, expected 6"):
        verify_file(path, RemoteFile("w.bin", 6, sha256=good))
    with pytest.raises(IntegrityError, match="does not match the manifest"):
        verify_file(path, RemoteFile("w.bin", 5, sha256=hashlib.sha256(b"x").hexdigest()))


def test_a_manifest_round_trips_and_a_bad_one_is_named(tmp_path: Path) -> None:
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "w.bin").write_bytes(b"abc")
    manifest = build_manifest(tmp_path)
    files = parse_manifest(json.dumps(manifest).encode(), source="m.json")
    assert files == [RemoteFile("unet/w.bin", 3, sha256=hashlib.sha256(b"abc").hexdigest())]
    with pytest.raises(IntegrityError, match=r"m\.json is not a valid manifest"):
        parse_manifest(b'{"files": [{"path": "x"}]}', source="m.json")


def test_a_folder_is_published_whole_or_not_at_all(tmp_path: Path) -> None:
    dest = tmp_path / "model"

    def half_then_fail(folder: Path) -> None:
        (folder / "a.bin").write_bytes(b"half")
        raise FetchError("cut")

    with pytest.raises(FetchError):
        publish(dest, half_then_fail)
    assert list(tmp_path.iterdir()) == []

    def disk_full(folder: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(InsufficientSpace, match="filled up while writing"):
        publish(dest, disk_full)
    assert list(tmp_path.iterdir()) == []

    publish(dest, lambda folder: (folder / "a.bin").write_bytes(b"whole") and None)
    assert (dest / "a.bin").read_bytes() == b"whole"
    assert dest.stat().st_mode & 0o777 == 0o755


def test_the_free_space_check_names_sizes_and_what_to_change(tmp_path: Path) -> None:
    def usage(_: Path) -> DiskUsage:
        return DiskUsage(total=512 * 10**6, used=412 * 10**6, free=100 * 10**6)

    check_space(tmp_path, 50 * 10**6, "s3://b/m", usage)
    with pytest.raises(InsufficientSpace, match="s3://b/m needs 2000 MB but only 100 MB"):
        check_space(tmp_path, 2000 * 10**6, "s3://b/m", usage)


def test_progress_reports_rate_and_eta_at_most_every_interval() -> None:
    class Clock:
        now = 0.0

        def monotonic(self) -> float:
            return self.now

        def sleep(self, seconds: float) -> None:
            self.now += seconds

    clock, seen = Clock(), []
    meter = ProgressMeter(100 * 10**6, 2, seen.append, interval_s=1.0, clock=clock)
    clock.now = 2.0
    meter.add(50 * 10**6)
    meter.add(10 * 10**6)  # within the interval: not reported
    final = meter.finish()
    assert [p.bytes_done for p in seen] == [50 * 10**6, 60 * 10**6]
    assert final.rate_mb_s == 30.0
    assert final.as_detail()["eta_s"] == pytest.approx(1.3, abs=0.05)


def test_s3_settings_are_read_and_checked() -> None:
    settings = Settings.from_env(
        {"THAW_S3_ENDPOINT_URL": "http://127.0.0.1:9000", "THAW_S3_CONCURRENCY": "4"}
    )
    assert settings.s3_endpoint_url == "http://127.0.0.1:9000"
    assert settings.s3_concurrency == 4
    assert Settings.from_env({"AWS_LAMBDA_FUNCTION_NAME": "f"}).cache_dir == Path("/tmp/thaw-cache")
    with pytest.raises(SettingsError, match="THAW_S3_ENDPOINT_URL"):
        Settings.from_env({"THAW_S3_ENDPOINT_URL": "minio:9000"})
    with pytest.raises(SettingsError, match="THAW_S3_PART_MB"):
        Settings.from_env({"THAW_S3_PART_MB": "0"})


def test_the_prefetch_thread_yields_the_cpu_and_hands_back_its_result(tmp_path: Path) -> None:
    seen: list[int] = []

    def resolve(cancel: threading.Event) -> Path:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return tmp_path

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert BackgroundResolve(resolve).result() == tmp_path
    assert seen == [max(before, BACKGROUND_NICE)]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before  # caller untouched

    def fails(cancel: threading.Event) -> Path:
        raise ModelNotFound("no such model")

    with pytest.raises(ModelNotFound, match="no such model"):
        BackgroundResolve(fails).result()
