"""One validated settings object, read once from `THAW_*` environment variables at start.

Every variable name lives here (or in the function package's own config, read through the same
`EnvReader`), and a bad value fails at start with a message naming the variable. Nothing reads
`os.environ` at import time: callers pass the mapping in.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path
from typing import TypeVar

E = TypeVar("E", bound=Enum)

PREFIX = "THAW_"

log = logging.getLogger("thaw.settings")


class SettingsError(ValueError):
    """A setting has a bad value; the message names the variable."""


class PreloadPolicy(StrEnum):
    """When the model loads."""

    BACKGROUND = "background"
    """Listen at once and start loading right after startup (the default)."""

    EAGER = "eager"
    """Finish loading before the server accepts connections."""

    LAZY = "lazy"
    """Load on the first request that needs the model."""


class EnvReader:
    """Typed, validated access to `THAW_*` variables in a given mapping."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def raw(self, name: str) -> str | None:
        value = self.environ.get(PREFIX + name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def string(self, name: str, default: str) -> str:
        value = self.raw(name)
        return default if value is None else value

    def optional(self, name: str) -> str | None:
        return self.raw(name)

    def number(
        self, name: str, default: float, *, minimum: float = 0.0, maximum: float | None = None
    ) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise SettingsError(f"{PREFIX}{name}={value!r} is not a number") from None
        self._check_range(name, number, minimum, maximum)
        return number

    def integer(
        self, name: str, default: int, *, minimum: int = 0, maximum: int | None = None
    ) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise SettingsError(f"{PREFIX}{name}={value!r} is not an integer") from None
        self._check_range(name, number, minimum, maximum)
        return number

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{PREFIX}{name}={value!r} is not a boolean (use 1/0, true/false)")

    def choice(self, name: str, enum: type[E], default: E) -> E:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return enum(value.lower())
        except ValueError:
            allowed = ", ".join(str(member.value) for member in enum)
            raise SettingsError(f"{PREFIX}{name}={value!r} must be one of: {allowed}") from None

    @staticmethod
    def _check_range(name: str, number: float, minimum: float, maximum: float | None) -> None:
        if number < minimum or (maximum is not None and number > maximum):
            upper = "" if maximum is None else f" and <= {maximum:g}"
            raise SettingsError(f"{PREFIX}{name}={number:g} must be >= {minimum:g}{upper}")


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    """Where thaw keeps generated and fetched models: /tmp on Lambda (the only writable place)."""
    if environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        return Path("/tmp/thaw-cache")
    xdg = environ.get("XDG_CACHE_HOME") or os.path.join(environ.get("HOME", "/tmp"), ".cache")
    return Path(xdg) / "thaw"


def hub_cache_dir(environ: Mapping[str, str]) -> Path:
    """The Hugging Face hub cache folder, as huggingface_hub computes it: `HF_HUB_CACHE`, else
    its legacy name `HUGGINGFACE_HUB_CACHE`, else `HF_HOME/hub`; a leading `~` expanded."""
    cache = environ.get("HF_HUB_CACHE") or environ.get("HUGGINGFACE_HUB_CACHE")
    if not cache:
        home = environ.get("HF_HOME") or os.path.join(
            environ.get("XDG_CACHE_HOME") or os.path.join(environ.get("HOME", "/tmp"), ".cache"),
            "huggingface",
        )
        cache = os.path.join(home, "hub")
    return Path(cache).expanduser()


def _url(env: EnvReader, name: str) -> str | None:
    value = env.optional(name)
    if value is not None and not value.startswith(("http://", "https://")):
        raise SettingsError(f"{PREFIX}{name}={value!r} must start with http:// or https://")
    return value


def _jobs_url(env: EnvReader) -> str | None:
    """THAW_JOBS_URL: `s3://bucket[/prefix]`, where every replica keeps its jobs (else the
    local folder THAW_JOBS_DIR; both at once would be ambiguous)."""
    value = env.optional("JOBS_URL")
    if value is None:
        return None
    bucket = value.removeprefix("s3://").partition("/")[0]
    if not value.startswith("s3://") or not bucket:
        raise SettingsError(f"{PREFIX}JOBS_URL={value!r} must be s3://bucket or s3://bucket/prefix")
    if env.optional("JOBS_DIR") is not None:
        raise SettingsError(
            f"{PREFIX}JOBS_URL and {PREFIX}JOBS_DIR are both set: jobs live in one place"
        )
    return value


WEBHOOK_SECRET_PREFIX = "whsec_"
WEBHOOK_KEY_BYTES = (24, 64)
"""A Standard Webhooks symmetric key: at least 24 bytes, at most 512 bits."""

_HOST_NAME = re.compile(r"(\*\.)?[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*")


@dataclass(frozen=True)
class WebhookSettings:
    """Where job webhooks may go, how they are signed, and how hard delivery tries.

    `hosts` empty means webhooks are off: a job that asks for one is refused (422). An entry is
    a host name (`hooks.example.com`), every subdomain of one (`*.example.com`), an address
    (`10.0.0.7`, `::1`), a network (`10.0.0.0/8`), or `*` for any host whose addresses are all
    public. Loopback and private addresses are reachable only through an entry that names them.
    Link-local addresses (169.254.0.0/16, fe80::/10: cloud metadata services) are never called,
    listed or not."""

    hosts: tuple[str, ...] = ()
    """Where job webhooks may go, comma-separated: host names (`hooks.example.com`), subdomains
    (`*.example.com`), addresses, networks (`10.0.0.0/8`), or `*` for any host whose addresses are
    all public. Unset: webhooks are off, and a job that asks for one is refused (422)."""
    keys: tuple[bytes, ...] = field(default=(), repr=False)
    """The signing secret (`whsec_` and the base64 of 24 to 64 random bytes), per Standard Webhooks;
    several, separated by spaces, while receivers move to a new one. Required with
    `THAW_WEBHOOK_HOSTS`."""
    timeout_s: float = 15.0
    """The bound on one delivery attempt: resolve, connect, send and answer."""
    retry_s: float = 300.0
    """How long a failed delivery (no connection, no answer, 408, 429, 5xx) keeps being retried,
    with exponential backoff and jitter, honouring `Retry-After`."""
    backoff_s: float = 1.0
    """The first wait before a retry; it doubles per attempt."""
    progress_s: float = 1.0
    """The least time between two progress events of one job."""
    queue_size: int = 1000
    """Deliveries that may wait in the process; more are dropped and logged."""
    drain_s: float = 5.0
    """At shutdown, how long pending deliveries may still run."""

    @property
    def enabled(self) -> bool:
        return bool(self.hosts)

    @classmethod
    def from_env(cls, env: EnvReader) -> WebhookSettings:
        hosts = _webhook_hosts(env)
        keys = _webhook_keys(env)
        if hosts and not keys:
            raise SettingsError(
                "THAW_WEBHOOK_SECRET must be set when THAW_WEBHOOK_HOSTS is: every webhook is "
                "signed (a whsec_ secret: whsec_ and the base64 of 24 to 64 random bytes)"
            )
        return cls(
            hosts=hosts,
            keys=keys,
            timeout_s=env.number("WEBHOOK_TIMEOUT_S", 15.0, minimum=0.01, maximum=300.0),
            retry_s=env.number("WEBHOOK_RETRY_S", 300.0, maximum=86_400.0),
            backoff_s=env.number("WEBHOOK_BACKOFF_S", 1.0, minimum=0.01, maximum=3600.0),
            progress_s=env.number("WEBHOOK_PROGRESS_S", 1.0, maximum=3600.0),
            queue_size=env.integer("WEBHOOK_QUEUE_SIZE", 1000, minimum=1, maximum=1_000_000),
            drain_s=env.number("WEBHOOK_DRAIN_S", 5.0, maximum=3600.0),
        )


def _webhook_hosts(env: EnvReader) -> tuple[str, ...]:
    value = env.optional("WEBHOOK_HOSTS")
    if value is None:
        return ()
    hosts = []
    for entry in (part.strip().lower() for part in value.split(",")):
        if not entry:
            continue
        if entry != "*" and not _HOST_NAME.fullmatch(entry):
            try:
                ipaddress.ip_network(entry.strip("[]"))
            except ValueError:
                raise SettingsError(
                    f"THAW_WEBHOOK_HOSTS: {entry!r} is not a host name, *.domain, address, "
                    "network or *"
                ) from None
            entry = entry.strip("[]")
        hosts.append(entry)
    return tuple(hosts)


def _webhook_keys(env: EnvReader) -> tuple[bytes, ...]:
    """The keys of THAW_WEBHOOK_SECRET: one `whsec_` secret, or several separated by spaces
    while receivers move to a new one. An error never repeats the secret."""
    value = env.optional("WEBHOOK_SECRET")
    if value is None:
        return ()
    keys = []
    low, high = WEBHOOK_KEY_BYTES
    for number, secret in enumerate(value.split(), start=1):
        which = f"THAW_WEBHOOK_SECRET (secret {number})"
        if not secret.startswith(WEBHOOK_SECRET_PREFIX):
            raise SettingsError(f"{which} must start with {WEBHOOK_SECRET_PREFIX!r}")
        encoded = secret.removeprefix(WEBHOOK_SECRET_PREFIX)
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except ValueError:
            raise SettingsError(f"{which}: the part after 'whsec_' is not base64") from None
        if not low <= len(key) <= high:
            raise SettingsError(f"{which} holds {len(key)} bytes: use {low} to {high} random")
        keys.append(key)
    return tuple(keys)


_said: set[str] = set()


def _deprecated(line: str) -> None:
    """Log a deprecation once per process (the settings are read more than once at start)."""
    if line not in _said:
        _said.add(line)
        log.warning(line)


class LogFormat(StrEnum):
    """How log records are written to stderr."""

    AUTO = "auto"
    """Text when stderr is a terminal, else JSON (the default)."""

    TEXT = "text"
    """One readable line per event, in uvicorn's style; coloured only at a terminal."""

    JSON = "json"
    """One JSON object per line, for a log pipeline (CloudWatch, Cloud Logging, Loki)."""


class WorkerMode(StrEnum):
    """Where the model lives."""

    PROCESS = "process"
    """In a child process (`runtime.worker`): the server never imports torch (the default)."""

    INLINE = "inline"
    """In the server's own process, loaded in a thread."""


class WorkerStart(StrEnum):
    """When `python -m handler` starts its model worker."""

    AUTO = "auto"
    """First thing where at least two CPUs are available, once the server listens below that."""

    EARLY = "early"
    """First thing, before the server imports its web stack: the two overlap on separate CPUs."""

    AFTER_LISTEN = "after_listen"
    """Once the server listens (its socket accepts): on one CPU the worker's start would share
    it with the server's imports and start, and the server would listen later without the
    model being ready any sooner. Under plain uvicorn the lifespan starts it, before listening."""


def _worker(env: EnvReader) -> WorkerMode:
    if (env.raw("WORKER") or "").lower() == "thread":  # the name before 2026-12-02
        _deprecated("THAW_WORKER=thread is deprecated: it is now THAW_WORKER=inline")
        return WorkerMode.INLINE
    return env.choice("WORKER", WorkerMode, WorkerMode.PROCESS)


@dataclass(frozen=True)
class Settings:
    """The runtime's own settings: what the lifecycle, the weight sources, the worker and the
    Lambda adapter read. A function's settings (its device, its dtype) and the HTTP edge's (host,
    port, key) belong to them, read with the same `EnvReader`. Build with
    `Settings.from_env(os.environ)` at the process edge."""

    model: str | None = None
    """The model to serve: a local folder, a Hugging Face model id read from the local hub cache
    (never downloaded at run time), or `s3://bucket/prefix` (fetched once per environment into the
    cache). Unset: the embedded tiny model that `make model` builds."""
    model_revision: str = "main"
    """The revision of a Hugging Face model id."""
    hub_cache: Path = Path("/tmp/huggingface/hub")
    loader: str | None = None
    """`package.module:function` called as `function(config, phases)` to load the model instead of
    the diffusers loader."""
    preload: PreloadPolicy = PreloadPolicy.BACKGROUND
    """When the model loads."""
    warm_wait_s: float = 30.0
    """How long a request waits for a model that is still loading before it is answered 503
    `warming_up`."""
    max_concurrency: int = 1
    """Generations running at once (in the worker process each has a thread and a scheduler of its
    own)."""
    queue_size: int = 8
    """Accepted requests that may wait for a turn beyond those running; past it, 429 with
    Retry-After."""
    queue_timeout_s: float = 120.0
    """The longest a request waits in the queue for its turn (then 503 `queue_timeout`)."""
    request_timeout_s: float = 300.0
    """The deadline of one generation (then 504 `deadline_exceeded`)."""
    load_attempts: int = 3
    """Attempts per load, with exponential backoff between them."""
    load_backoff_s: float = 2.0
    """The first wait between two load attempts; it doubles per attempt."""
    load_backoff_max_s: float = 30.0
    """The cap on the wait between two load attempts."""
    load_cooldown_s: float = 30.0
    """After a load failed every attempt, how long until a fresh load starts by itself (or on
    demand); it doubles with each consecutive failed load."""
    load_cooldown_max_s: float = 300.0
    """The cap on that cool-down."""
    unhealthy_after_s: float = 600.0
    """Once the model has failed to load for this long without a success, `/livez` answers 503 so
    that the platform restarts the container (0: never)."""
    load_timeout_s: float = 1800.0
    """A load attempt that runs longer (a hung mount, a stuck download) counts as failed, and its
    worker is stopped."""
    log_level: str = "info"
    """The lowest level logged: `debug`, `info`, `warning` or `error`."""
    log_format: LogFormat = LogFormat.AUTO
    """How log records are written to stderr."""
    cache_dir: Path = Path("/tmp/thaw-cache")
    """Where generated and fetched models are kept (and jobs, unless `THAW_JOBS_DIR` says
    otherwise); `/tmp/thaw-cache` on Lambda."""
    on_lambda: bool = False
    lambda_margin_s: float = 1.0
    """On Lambda, the seconds kept back from an invocation's remaining time to answer: a model still
    loading then gets a clean 503, never a Lambda timeout."""
    lambda_max_response_bytes: int = 6 * 1024 * 1024
    """On Lambda, the buffered response limit; a larger response is a 413 JSON error, not a Lambda
    failure."""
    warmup_hold_s: float = 0.5
    """On Lambda, how long each target of a warm-up fan-out stays busy, so that the invokes land on
    distinct environments."""
    s3_endpoint_url: str | None = None
    """An S3-compatible endpoint (path-style addressing) to use instead of AWS's."""
    s3_concurrency: int = 16
    """Byte-range requests in flight at once when a model is fetched from S3."""
    s3_part_mb: int = 16
    """The size of each byte range fetched from S3, in MiB."""
    drain_delay_s: float = 0.0
    """After SIGTERM or SIGINT, how long new requests are still accepted while readiness already
    fails (Kubernetes removes a pod from its endpoints only as it sends SIGTERM)."""
    drain_timeout_s: float = 60.0
    """From the stop signal, the deadline for accepted requests; those left are answered 503
    `draining` and logged by request id, and the process exits 1."""
    idle_unload_s: float = 0.0
    """Release the model after this long with nothing served; the next request loads it again (0:
    never)."""
    max_batch: int = 1
    """Micro-batching: up to this many queued requests with the same size, steps and guidance run as
    one pipeline call (1: off). Also the most images (`n`) one /v1/images/generations may ask."""
    batch_window_ms: float = 10.0
    """With batching on, how long the request whose turn came waits for companions."""
    prefetch: bool = True
    """Read the weight files into the page cache in a thread while torch and diffusers import."""
    gc_pause: bool = True
    """Load with Python's cyclic garbage collector paused, then freeze what survived, so later
    collections skip the ~700,000 objects a load creates."""
    emf: bool = True
    """On Lambda, write one CloudWatch Embedded Metric Format line per invocation."""
    worker: WorkerMode = WorkerMode.PROCESS
    """Where the model lives (`thread`, the old name of `inline`, still works, with a deprecation
    line in the log)."""
    worker_start: WorkerStart = WorkerStart.AUTO
    """When `python -m handler` lets its model worker import and load."""
    metrics_namespace: str = "thaw"
    """The CloudWatch namespace of the Embedded Metric Format lines."""
    job_ttl_s: float = 86_400.0
    """How long a finished job and its image are kept before they are deleted."""
    jobs_dir: Path | None = None
    """The folder jobs live in, one folder per job, written atomically (default: `jobs` in the cache
    folder)."""
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    jobs_url: str | None = None
    """`s3://bucket[/prefix]` where jobs live, shared by every replica and by Lambda's invocations
    (instead of a local folder)."""
    job_lease_s: float = 30.0
    """How long a job stays held by its process without a renewal; a job found past its lease is
    recorded failed, lost with its process."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        env = EnvReader(environ)
        log_level = env.string("LOG_LEVEL", "info").lower()
        if log_level not in ("debug", "info", "warning", "error"):
            raise SettingsError(
                f"THAW_LOG_LEVEL={log_level!r} must be debug, info, warning or error"
            )
        cache = env.optional("CACHE_DIR")
        drain_delay_s = env.number("DRAIN_DELAY_S", 0.0, maximum=3600.0)
        drain_timeout_s = env.number("DRAIN_TIMEOUT_S", 60.0, minimum=0.001, maximum=86_400.0)
        if drain_delay_s >= drain_timeout_s:
            raise SettingsError(
                f"THAW_DRAIN_DELAY_S={drain_delay_s:g} must be below "
                f"THAW_DRAIN_TIMEOUT_S={drain_timeout_s:g}: the timeout counts from the signal"
            )
        return cls(
            model=env.optional("MODEL"),
            model_revision=env.string("MODEL_REVISION", "main"),
            hub_cache=hub_cache_dir(environ),
            loader=env.optional("LOADER"),
            preload=env.choice("PRELOAD", PreloadPolicy, PreloadPolicy.BACKGROUND),
            warm_wait_s=env.number("WARM_WAIT_S", 30.0),
            max_concurrency=env.integer("MAX_CONCURRENCY", 1, minimum=1, maximum=1024),
            queue_size=env.integer("QUEUE_SIZE", 8, minimum=0, maximum=100_000),
            queue_timeout_s=env.number("QUEUE_TIMEOUT_S", 120.0, minimum=0.001),
            request_timeout_s=env.number("REQUEST_TIMEOUT_S", 300.0, minimum=0.001),
            load_attempts=env.integer("LOAD_ATTEMPTS", 3, minimum=1, maximum=100),
            load_backoff_s=env.number("LOAD_BACKOFF_S", 2.0),
            load_backoff_max_s=env.number("LOAD_BACKOFF_MAX_S", 30.0),
            load_cooldown_s=env.number("LOAD_COOLDOWN_S", 30.0),
            load_cooldown_max_s=env.number("LOAD_COOLDOWN_MAX_S", 300.0),
            unhealthy_after_s=env.number("UNHEALTHY_AFTER_S", 600.0),
            load_timeout_s=env.number("LOAD_TIMEOUT_S", 1800.0, minimum=0.001),
            log_level=log_level,
            log_format=env.choice("LOG_FORMAT", LogFormat, LogFormat.AUTO),
            cache_dir=Path(cache) if cache else default_cache_dir(environ),
            on_lambda=bool(environ.get("AWS_LAMBDA_FUNCTION_NAME")),
            lambda_margin_s=env.number("LAMBDA_MARGIN_S", 1.0, maximum=60.0),
            lambda_max_response_bytes=env.integer(
                "LAMBDA_MAX_RESPONSE_BYTES", 6 * 1024 * 1024, minimum=1024, maximum=6 * 1024 * 1024
            ),
            warmup_hold_s=env.number("WARMUP_HOLD_S", 0.5, maximum=10.0),
            s3_endpoint_url=_url(env, "S3_ENDPOINT_URL"),
            s3_concurrency=env.integer("S3_CONCURRENCY", 16, minimum=1, maximum=256),
            s3_part_mb=env.integer("S3_PART_MB", 16, minimum=1, maximum=5120),
            drain_delay_s=drain_delay_s,
            drain_timeout_s=drain_timeout_s,
            idle_unload_s=env.number("IDLE_UNLOAD_S", 0.0),
            max_batch=env.integer("MAX_BATCH", 1, minimum=1, maximum=64),
            batch_window_ms=env.number("BATCH_WINDOW_MS", 10.0, maximum=10_000.0),
            prefetch=env.flag("PREFETCH", True),
            gc_pause=env.flag("GC_PAUSE", True),
            emf=env.flag("EMF", True),
            worker=_worker(env),
            worker_start=env.choice("WORKER_START", WorkerStart, WorkerStart.AUTO),
            metrics_namespace=env.string("METRICS_NAMESPACE", "thaw"),
            job_ttl_s=env.number("JOB_TTL_S", 86_400.0, minimum=1.0),
            jobs_dir=Path(jobs_dir) if (jobs_dir := env.optional("JOBS_DIR")) else None,
            webhooks=WebhookSettings.from_env(env),
            jobs_url=_jobs_url(env),
            job_lease_s=env.number("JOB_LEASE_S", 30.0, minimum=1.0, maximum=3600.0),
        )

    def retry_policy_args(self) -> dict[str, float | int | None]:
        return {
            "attempts": self.load_attempts,
            "backoff_s": self.load_backoff_s,
            "backoff_max_s": self.load_backoff_max_s,
            "cooldown_s": self.load_cooldown_s,
            "cooldown_max_s": max(self.load_cooldown_s, self.load_cooldown_max_s),
            # A worker process enforces the timeout itself (it kills the child and the attempt
            # fails like any other); only a load in this process's thread cannot be stopped.
            "attempt_timeout_s": self.load_timeout_s if self.worker is WorkerMode.INLINE else None,
        }
