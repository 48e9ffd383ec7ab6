"""Fetching a model from a real S3 API server into the cache, through the real `ModelSlot`.

No torch here: the slot's loader only resolves the model folder, so each failure and its recovery
is seen in the slot's own state, as the service would report it, in well under a second.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runtime.errors import LoadFailed
from runtime.lifecycle.slot import ModelSlot, RetryPolicy
from runtime.lifecycle.states import SlotState
from runtime.observe.phases import PhaseRecorder
from runtime.settings import Settings
from runtime.weights.fetch import S3Options, cache_folder, fetch_to_cache
from runtime.weights.integrity import build_manifest
from runtime.weights.s3 import S3Location, make_client
from runtime.weights.sources import resolve_model
from tests.integration.s3.conftest import BUCKET, key_of, object_gets
from tests.support.s3_server import S3Server
from tests.support.server import free_port

UNET = "unet/diffusion_pytorch_model.safetensors"
COOLDOWN_S = 0.2


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3 finds these the usual way, as it would find a Lambda role's."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def model_slot(s3: S3Server, ref: str, cache: Path) -> ModelSlot[Path]:
    settings = Settings(model=ref, cache_dir=cache, s3_endpoint_url=s3.endpoint, s3_part_mb=1)

    def load(phases: PhaseRecorder) -> Path:
        return resolve_model(ref, phases, settings)

    return ModelSlot("model", load, retry=RetryPolicy(attempts=2, backoff_s=0.01, cooldown_s=0.2))


def same_files(fetched: Path, original: Path) -> bool:
    wanted = {p.relative_to(original) for p in original.rglob("*") if p.is_file()}
    wanted = {p for p in wanted if not p.name.startswith(".")}
    return all((fetched / p).read_bytes() == (original / p).read_bytes() for p in wanted)


def leftovers(s3: S3Server, cache: Path, ref: str) -> list[str]:
    folder = cache_folder(cache, S3Location.parse(ref), s3.endpoint)
    return sorted(p.name for p in folder.iterdir() if p.name != ".lock") if folder.exists() else []


def test_a_model_is_fetched_in_ranges_then_reused_without_download(
    s3: S3Server, s3_model: str, tiny_model: Path, tmp_path: Path
) -> None:
    s3.clear_requests()
    path = model_slot(s3, s3_model, tmp_path).get(timeout=60)
    assert same_files(path, tiny_model)
    gets = object_gets(s3.requests())
    assert all(g.endswith(" range") for g in gets)
    assert sum(UNET in g for g in gets) == 4  # 3.8 MiB in 1 MiB ranges

    slot = model_slot(s3, s3_model, tmp_path)  # a second start in the same environment
    s3.clear_requests()
    assert slot.get(timeout=60) == path
    assert s3.requests() == ["GET /models?list"]
    fetch = next(p for p in slot.snapshot().phases if p["name"] == "fetch")
    assert fetch["detail"]["cached"] is True


def test_progress_is_reported_in_the_fetch_phase(
    s3: S3Server, s3_model: str, tiny_model: Path, tmp_path: Path
) -> None:
    slot = model_slot(s3, s3_model, tmp_path)
    slot.get(timeout=60)
    fetch = next(p for p in slot.snapshot().phases if p["name"] == "fetch")
    files = [p for p in tiny_model.rglob("*") if p.is_file() and not p.name.startswith(".")]
    total = sum(p.stat().st_size for p in files)
    detail = fetch["detail"]
    assert fetch["state"] == "done"
    assert detail["bytes_done"] == detail["bytes_total"] == total
    assert detail["files_done"] == detail["files_total"] == 10
    assert detail["rate_mb_s"] > 0
    assert detail["cached"] is False


def _put(s3: S3Server, ref: str, relpath: str, body: bytes) -> None:
    bucket, key = key_of(ref, relpath)
    s3.client().put_object(Bucket=bucket, Key=key, Body=body)


def _manifest(folder: Path) -> bytes:
    return json.dumps(build_manifest(folder)).encode()


def _bad_checksum(s3: S3Server, ref: str, model: Path) -> Callable[[], None]:
    manifest = json.loads(_manifest(model))
    for entry in manifest["files"]:
        if entry["path"] == UNET:
            entry["sha256"] = hashlib.sha256(b"something else").hexdigest()
    _put(s3, ref, "thaw-manifest.json", json.dumps(manifest).encode())
    return lambda: _put(s3, ref, "thaw-manifest.json", _manifest(model))


def _truncated(s3: S3Server, ref: str, model: Path) -> Callable[[], None]:
    _put(s3, ref, "thaw-manifest.json", _manifest(model))
    original = (model / UNET).read_bytes()
    _put(s3, ref, UNET, original[: len(original) // 2])
    return lambda: _put(s3, ref, UNET, original)


def _cut_mid_object(s3: S3Server, ref: str, model: Path) -> Callable[[], None]:
    s3.break_key(UNET, "cut", after=300_000)
    return s3.heal


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (_bad_checksum, "IntegrityError: unet/diffusion_pytorch_model.safetensors: sha256"),
        (_truncated, "bytes in S3 but the manifest says"),
        (_cut_mid_object, "S3Unreachable: connection to S3 lost while reading s3://models/"),
    ],
    ids=["checksum-mismatch", "truncated-object", "connection-cut-mid-object"],
)
def test_a_failed_fetch_leaves_no_model_and_recovers_once_fixed(
    s3: S3Server,
    s3_model: str,
    tiny_model: Path,
    tmp_path: Path,
    fault: Callable[[S3Server, str, Path], Callable[[], None]],
    error: str,
) -> None:
    fix = fault(s3, s3_model, tiny_model)
    slot = model_slot(s3, s3_model, tmp_path)
    try:
        with pytest.raises(LoadFailed) as failed:
            slot.get(timeout=60)
    finally:
        fixed = fix
    snapshot = slot.snapshot()
    assert snapshot.state is SlotState.FAILED
    assert snapshot.load_attempts == 2  # the slot's retry ran, and failed the same way
    assert error in failed.value.reason
    assert leftovers(s3, tmp_path, s3_model) == []  # no folder, complete-looking or not

    fixed()
    time.sleep(COOLDOWN_S)
    path = slot.get(timeout=60)
    assert same_files(path, tiny_model)
    assert leftovers(s3, tmp_path, s3_model) == [path.name]


@pytest.mark.parametrize(
    ("ref", "error"),
    [
        ("s3://no-such-bucket/tiny", "S3NotFound: bucket of s3://no-such-bucket/tiny does not"),
        ("s3://models/no-such-model", "S3NotFound: no objects under s3://models/no-such-model"),
    ],
)
def test_a_missing_bucket_or_prefix_is_named(
    s3: S3Server, tmp_path: Path, ref: str, error: str
) -> None:
    slot = model_slot(s3, ref, tmp_path)
    with pytest.raises(LoadFailed, match="model failed to load"):
        slot.get(timeout=60)
    assert error in (slot.snapshot().last_error or "")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MB filesystem (tmpfs), smaller than the tiny model."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_model_larger_than_the_free_space_fails_before_downloading(
    s3: S3Server, s3_model: str, small_disk: Path
) -> None:
    s3.clear_requests()
    slot = model_slot(s3, s3_model, small_disk)
    with pytest.raises(LoadFailed):
        slot.get(timeout=60)
    reason = slot.snapshot().last_error or ""
    assert reason.startswith(f"InsufficientSpace: [Errno 28] {s3_model} needs 8 MB but only 4 MB")
    assert "EphemeralStorage" in reason
    assert object_gets(s3.requests()) == []
    assert leftovers(s3, small_disk, s3_model) == []


def test_access_denied_is_named(tmp_path: Path, tiny_model: Path) -> None:
    """An S3 server that checks IAM: a user who may list the bucket but not read objects."""
    # The first five actions (the setup below) run unauthenticated; every later one is checked.
    server = S3Server(tmp_path / "iam.log", env={"INITIAL_NO_AUTH_ACTION_COUNT": "5"}).start()
    try:
        admin = server.client()
        admin.create_bucket(Bucket="locked")
        admin.put_object(Bucket="locked", Key="tiny/model_index.json", Body=b"{}")
        iam = server.client("iam")
        iam.create_user(UserName="reader")
        iam.put_user_policy(
            UserName="reader",
            PolicyName="list-only",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "*"}],
                }
            ),
        )
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        reader = server.client(key=key["AccessKeyId"], secret=key["SecretAccessKey"])
        settings = Settings(cache_dir=tmp_path / "cache")
        for client, fragment in [
            (reader, "access denied reading s3://locked/tiny/model_index.json (AccessDenied)"),
            (server.client(key="AKIAUNKNOWN"), "access denied reading s3://locked/tiny"),
        ]:

            def load(phases: PhaseRecorder, client: object = client) -> Path:
                return resolve_model("s3://locked/tiny", phases, settings, s3_client=client)

            slot = ModelSlot("model", load, retry=RetryPolicy(attempts=1))
            with pytest.raises(LoadFailed):
                slot.get(timeout=60)
            assert fragment in (slot.snapshot().last_error or "")
            assert "S3AccessDenied" in (slot.snapshot().last_error or "")
    finally:
        server.stop()


def test_look_alike_prefixes_keep_their_own_cached_copies(s3: S3Server, tmp_path: Path) -> None:
    tag = time.monotonic_ns()
    # `a/b` and `a--b` (and `a b`, `a_b`) once shared one cache folder.
    refs = {
        f"s3://{BUCKET}/alike-{tag}/x": b"one",
        f"s3://{BUCKET}/alike-{tag}--x": b"two",
        f"s3://{BUCKET}/alike-{tag}/x y": b"three",
        f"s3://{BUCKET}/alike-{tag}/x_y": b"four",
    }
    reachable = S3Options(endpoint_url=s3.endpoint)
    fetched = {}
    for ref, marker in refs.items():
        _put(s3, ref, "marker.txt", marker)
        fetched[ref] = fetch_to_cache(ref, tmp_path, reachable).path
    assert len({path.parent for path in fetched.values()}) == len(refs)
    # S3 out of reach: each reference falls back to its own copy, never another's.
    dead = make_client(endpoint_url=f"http://127.0.0.1:{free_port()}")
    unreachable = S3Options(endpoint_url=s3.endpoint, client=dead)
    for ref, marker in refs.items():
        result = fetch_to_cache(ref, tmp_path, unreachable)
        assert result.cached
        assert (result.path / "marker.txt").read_bytes() == marker, ref
