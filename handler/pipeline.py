"""The diffusers text-to-image pipeline: loading it into the slot, and generating with it.

torch, diffusers and transformers are imported only inside `load_pipeline` (which runs in the
slot's loader thread, under its single flight) and `generate` (a worker thread, after a load), so
importing this module, or the app, stays cheap.
"""

from __future__ import annotations

import copy
import gc
import inspect
import io
import logging
import os
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from handler.child import LOAD_REF
from handler.config import Config
from handler.terms import ModelTerms, read_terms
from handler.variants import choose_variant
from runtime import collector
from runtime.lifecycle.slot import ModelSlot
from runtime.observe.phases import PhaseRecorder
from runtime.settings import WorkerMode
from runtime.weights import pagecache
from runtime.weights.sources import BackgroundResolve, ModelNotFound, resolve_model
from runtime.work import current as current_work
from runtime.worker import WorkerProcess, import_ref

if TYPE_CHECKING:
    from PIL.Image import Image

log = logging.getLogger("thaw.pipeline")


@dataclass(frozen=True)
class LoadedPipeline:
    """A loaded pipeline and the facts `/health` reports about it."""

    pipe: Any
    device: str
    dtype: str
    source: str
    default_size: tuple[int, int]
    terms: ModelTerms | None = None
    """What a request to this model may ask (None: a custom loader's pipeline, taken to be
    called as Stable Diffusion's is)."""

    def when_lost(self, callback: Callable[[str], None]) -> None:
        """The slot hears here when the pipeline dies with its worker process."""
        if isinstance(self.pipe, WorkerProcess):
            self.pipe.when_lost(callback)

    def exited(self) -> str | None:
        """Why the worker process is gone, found at once; None while it runs (or inline)."""
        return self.pipe.exited() if isinstance(self.pipe, WorkerProcess) else None

    @property
    def stoppable(self) -> bool:
        """A pipeline in a worker process can be stopped (killed) when it hangs."""
        return isinstance(self.pipe, WorkerProcess)

    def summary(self) -> dict[str, Any]:
        """What a worker process reports to its parent about the pipeline it loaded."""
        return {
            "device": self.device,
            "dtype": self.dtype,
            "source": self.source,
            "default_size": self.default_size,
            "terms": self.terms,
        }

    def fit(self, params: GenerationParams) -> GenerationParams:
        """`params` with this model's defaults filled in, or `InvalidRequest` (see
        `ModelTerms.fit`); unchanged for a pipeline without terms."""
        return params if self.terms is None else self.terms.fit(params)


@dataclass(frozen=True)
class GenerationParams:
    """One validated request; the seed is drawn when the request had none. None elsewhere is
    the loaded model's default, filled in by `LoadedPipeline.fit` (as are the fields a model does
    not take: None)."""

    prompt: str
    negative_prompt: str | None
    steps: int | None
    guidance: float | None
    width: int | None
    height: int | None
    seed: int
    true_cfg_scale: float | None = None
    max_sequence_length: int | None = None


@dataclass(frozen=True)
class GeneratedImage:
    png: bytes
    width: int
    height: int
    seed: int
    inference_s: float
    encode_s: float


# The process-wide slot: created here, empty until the app (or Lambda INIT) binds and starts it.
PIPELINE: ModelSlot[LoadedPipeline] = ModelSlot("text-to-image")

PipelineLoader = Callable[[Config, PhaseRecorder], LoadedPipeline]


def choose_device(requested: str, torch: Any) -> str:
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def choose_dtype(requested: str, device: str) -> str:
    if requested != "auto":
        return requested
    return "float32" if device == "cpu" else "float16"


def cpu_threads(requested: int) -> int:
    """Intra-op threads for CPU inference: the setting, else every core this process may use but
    one. torch's default (every core) collapses when anything else wants a core: on 2 cores with
    one busy neighbour, bench/threads measured 2 threads 1.9x (128 px) and 2.2x (320 px) slower
    than 1, against a 0-1.26x gain when idle. The spare core keeps the event loop, a concurrent
    load or a neighbour going; on many cores it costs one core in n."""
    if requested > 0:
        return requested
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def load_pipeline(config: Config, phases: PhaseRecorder) -> LoadedPipeline:
    """Load the configured diffusers pipeline, recording each phase.

    The model folder is resolved (an `s3://` model downloaded) in a thread of its own while
    torch and diffusers import, so a cold start costs about the longer of the two, not their sum.
    """
    settings = config.pipeline
    fetch = BackgroundResolve(lambda cancel: _model_folder(config, phases, cancel))
    try:
        with phases.phase("import"):
            # transformers and diffusers log through handlers of their own, in plain text, and
            # draw progress bars: route their records to ours (JSON lines), bars off.
            from transformers.utils import logging as transformers_logging

            _into_our_logs(transformers_logging)
            import torch
            from diffusers import DiffusionPipeline
            from diffusers.utils import logging as diffusers_logging

            _into_our_logs(diffusers_logging)
        with phases.phase("configure"):
            device = choose_device(settings.device, torch)
            dtype_name = choose_dtype(settings.dtype, device)
            if device == "cpu":
                torch.set_num_threads(cpu_threads(settings.torch_threads))
    except BaseException:
        fetch.cancel()  # a retried load must not race a leftover download
        raise
    path = fetch.result()
    variant = choose_variant(path, settings.variant)
    # On the default GPU, diffusers places each component's weights straight on the device as it
    # reads them (no CPU copy first); elsewhere the pipeline is built on the CPU and moved.
    direct = device == "cuda"
    with phases.phase("build"):
        pipe = DiffusionPipeline.from_pretrained(  # type: ignore[no-untyped-call]
            str(path),
            dtype=getattr(torch, dtype_name),
            local_files_only=True,  # safetensors preferred (memory-mapped, no pickle)
            **({"device_map": device} if direct else {}),
            **({"variant": variant} if variant else {}),
        )
        pipe.set_progress_bar_config(disable=True)
    if not direct:
        with phases.phase("to_device"):
            pipe = pipe.to(device)
    terms = read_terms(pipe, config.limits)
    phases.progress("build", pipeline=terms.pipeline, variant=variant)
    loaded = LoadedPipeline(
        pipe=pipe,
        device=device,
        dtype=dtype_name,
        source=config.model_ref,
        default_size=terms.default_size,
        terms=terms,
    )
    if settings.warm_inference:
        with phases.phase("warmup"):
            side = max(64, terms.size_multiple)
            generate(loaded, GenerationParams("warm-up", None, 1, None, side, side, 0))
    return loaded


def _into_our_logs(library_logging: Any) -> None:
    """A model library's logging (transformers' or diffusers' `utils.logging`) through thaw's
    JSON handler instead of its own plain-text one, without progress bars."""
    library_logging.disable_default_handler()
    library_logging.enable_propagation()
    library_logging.disable_progress_bar()


def _model_folder(config: Config, phases: PhaseRecorder, cancel: threading.Event) -> Path:
    settings = config.runtime
    try:
        folder = resolve_model(config.model_ref, phases, settings, cancel=cancel)
    except ModelNotFound:
        if settings.model is None:
            raise ModelNotFound(
                f"the embedded default model is not built at {config.default_model_dir}: "
                "run `make model` (python infra/scripts/build_tiny_model.py) or set THAW_MODEL"
            ) from None
        raise
    if settings.prefetch:
        # Read the weights into the page cache while torch and diffusers still import (reads
        # release the GIL), so the build finds them in memory.
        pagecache.prefetch(folder, phases, cancel=cancel)
    return folder


def load_in_worker(config: Config, phases: PhaseRecorder) -> LoadedPipeline:
    """`THAW_WORKER=process`: load the pipeline in a child process (see runtime.worker); this
    process never imports torch. The child reads the same settings from the environment."""
    # The worker `python -m handler` started before importing its web stack, if it matches:
    # then its phases began before this attempt (negative `start_s` in /health).
    worker = WorkerProcess.take(LOAD_REF, env=os.environ)
    started = phases.begin("worker_start", at=worker.started_at)
    phases.end(started, at=worker.started_at + worker.spawn_seconds)
    phases.progress("worker_start", pid=worker.pid, started_early=worker.started_early)
    log.info(
        "model worker started", extra={"pid": worker.pid, "started_early": worker.started_early}
    )
    summary = worker.wait_loaded(phases, timeout=config.runtime.load_timeout_s)
    return LoadedPipeline(
        pipe=worker,
        device=summary["device"],
        dtype=summary["dtype"],
        source=summary["source"],
        default_size=tuple(summary["default_size"]),
        terms=summary.get("terms"),
    )


def release_pipeline(loaded: LoadedPipeline) -> None:
    """Drop the pipeline and hand cached GPU memory back to the driver (or stop its worker)."""
    if isinstance(loaded.pipe, WorkerProcess):
        loaded.pipe.close()
        return
    device = loaded.device
    del loaded
    collector.unfreeze()  # the load froze the pipeline's objects: hand them back to be freed
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def choose_loader(config: Config) -> PipelineLoader:
    """`THAW_WORKER=process` (the default) runs the loader in a child process, `inline` in this
    one (`in_process_loader`)."""
    if config.runtime.worker is WorkerMode.PROCESS:
        return load_in_worker  # the worker's own loader pauses its collector
    return in_process_loader(config)


def in_process_loader(config: Config) -> PipelineLoader:
    """The loader that does the work in this process: `load_pipeline`, or the one
    `THAW_LOADER=package.module:function` names (same signature), run with the garbage collector
    paused (`THAW_GC_PAUSE`, see runtime.collector)."""
    loader: PipelineLoader = (
        load_pipeline if config.runtime.loader is None else import_ref(config.runtime.loader)
    )
    return collector.pausing(loader) if config.runtime.gc_pause else loader


def batch_key(params: GenerationParams) -> tuple[Any, ...]:
    """Requests with equal keys can share one pipeline call (prompts and seeds may differ):
    every other value the call takes is in it. So is whether a negative prompt was given: to
    SDXL no negative prompt means zeroed embeddings, not those of "", and to Flux no true
    classifier-free guidance; a batch passes one for every item or none."""
    return (
        params.steps,
        params.guidance,
        params.width,
        params.height,
        params.true_cfg_scale,
        params.max_sequence_length,
        params.negative_prompt is not None,
    )


def generate(loaded: LoadedPipeline, params: GenerationParams) -> GeneratedImage:
    """Run one generation and encode it as PNG. Blocking: call it from a worker thread."""
    return generate_batch(loaded, [params])[0]


def generate_batch(loaded: LoadedPipeline, batch: list[GenerationParams]) -> list[GeneratedImage]:
    """Run requests with one `batch_key` as one pipeline call, one generator per request, so
    each image is the one its seed gives alone. Blocking: call it from a worker thread."""
    # Each request's defaults filled in for this model (it may have loaded, or been replaced,
    # while the request waited); one that asks what it does not take is refused here, and a
    # batch's requests share what decides that (`batch_key`): all of it or none.
    batch = [loaded.fit(params) for params in batch]
    if isinstance(loaded.pipe, WorkerProcess):
        return _in_worker(loaded.pipe, batch)
    import torch

    first = batch[0]
    if any(batch_key(params) != batch_key(first) for params in batch):
        raise ValueError("a batch mixes sizes, steps, guidance or negative prompts")
    started = time.perf_counter()
    # CPU generators give the same image for the same seed on every device.
    generators = [torch.Generator("cpu").manual_seed(params.seed) for params in batch]
    negative = [params.negative_prompt for params in batch]
    pipe = own_view(loaded.pipe)
    # A pipeline without a view of its own (a custom loader's wrapper) shares one scheduler
    # between calls: one call at a time on it.
    with SHARED_PIPELINE_CALLS if pipe is loaded.pipe else nullcontext(), torch.inference_mode():
        result = pipe(
            prompt=[params.prompt for params in batch],
            generator=generators if len(batch) > 1 else generators[0],
            output_type="pil",
            **call_arguments(first, None if first.negative_prompt is None else negative),
            **_step_reports(pipe, first.steps or 1),
        )
    inferred = time.perf_counter()
    images: list[GeneratedImage] = []
    for params, image in zip(batch, result.images, strict=True):
        encode_started = time.perf_counter()
        png = encode_png(image)
        images.append(
            GeneratedImage(
                png=png,
                width=image.width,
                height=image.height,
                seed=params.seed,
                inference_s=inferred - started,
                encode_s=time.perf_counter() - encode_started,
            )
        )
    return images


def call_arguments(first: GenerationParams, negative: list[str | None] | None) -> dict[str, Any]:
    """The pipeline's keyword arguments beside the prompts and generators: the values a batch
    shares, each passed only when set (`fit` leaves a field the model does not take None)."""
    values = {
        "negative_prompt": negative,
        "num_inference_steps": first.steps,
        "guidance_scale": first.guidance,
        "true_cfg_scale": first.true_cfg_scale,
        "width": first.width,
        "height": first.height,
        "max_sequence_length": first.max_sequence_length,
    }
    return {name: value for name, value in values.items() if value is not None}


SHARED_PIPELINE_CALLS = threading.Lock()
"""Held by calls on a pipeline that `own_view` cannot give a scheduler of its own."""


def _step_reports(pipe: Any, steps: int) -> dict[str, Any]:
    """diffusers' step-end callback, reporting each denoising step to the work in hand (see
    runtime.work): progress for jobs, and a stop at the next step once the work is canceled."""
    if "callback_on_step_end" not in inspect.signature(pipe.__call__).parameters:
        return {}
    work = current_work()

    def on_step_end(pipe: Any, step: int, _timestep: Any, tensors: dict[str, Any]) -> Any:
        # The scheduler may run more timesteps than steps asked for (PNDM's warm-up steps).
        work.step(step + 1, getattr(pipe, "num_timesteps", None) or steps)
        return tensors

    return {"callback_on_step_end": on_step_end}


def own_view(pipe: Any) -> Any:
    """The pipeline for one call: the same components (no weight copied), with a scheduler and
    per-call attributes of its own. A scheduler keeps the denoising loop's state (timesteps,
    step index) and a pipeline sets per-call attributes (`_guidance_scale`, ...) while it runs,
    so two generations sharing one object (THAW_MAX_CONCURRENCY > 1) would step on each other.
    A shallow copy is used, not `from_pipe`, which casts the shared components to a dtype.
    Other objects (a custom loader's wrapper) are used as they are."""
    from diffusers import DiffusionPipeline

    if not isinstance(pipe, DiffusionPipeline):
        return pipe
    scheduler: Any = getattr(pipe, "scheduler", None)
    if scheduler is None:
        return pipe
    view: Any = copy.copy(pipe)
    view.scheduler = scheduler.from_config(scheduler.config)
    return view


def _in_worker(worker: WorkerProcess, batch: list[GenerationParams]) -> list[GeneratedImage]:
    # A worker that dies raises WorkerDied here; the slot has already heard (`when_lost`) and
    # is loading a fresh worker.
    images: list[GeneratedImage] = worker.call("handler.pipeline:generate_batch", batch)
    return images


def encode_png(image: Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()
