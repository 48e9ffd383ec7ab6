# syntax=docker/dockerfile:1
# thaw: one image, two ways in. On AWS Lambda (AWS_LAMBDA_RUNTIME_API set) the entry script hands
# the process to awslambdaric; anywhere else it serves HTTP with uvicorn on THAW_PORT (8080).
#
#   docker build -t thaw .                                    # CPU torch (Lambda has no GPU)
#   docker build -t thaw-gpu --build-arg TORCH_VARIANT=cu128 .  # CUDA torch for GPU platforms
#   docker build -t thaw --build-arg BAKE_MODEL=none .        # no weights: THAW_MODEL=s3://...
#   make image                                                # the same, with docker or podman
#
# Layers are ordered for rebuilds (docs/image.md): the requirements (1.3 GB) change least, then
# the baked weights, then the code (under 1 MB), so a code change rebuilds one small layer.
# Stages: venv (requirements) -> rie (AWS's emulator) | weights (the model, from the venv) | app
# (the code) -> the image.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# -- venv: the requirements, bytecode compiled ---------------------------------------------------
FROM ${PYTHON_IMAGE} AS venv
# cpu for Lambda; a CUDA variant (cu126, cu128, ...) of the same torch release for GPU platforms.
ARG TORCH_VARIANT=cpu
# The torch pin of requirements.txt (a test keeps the two equal).
ARG TORCH_VERSION=2.13.0
# Where torch's wheel comes from: PyTorch's index for the variant, or a mirror of it (a builder
# that cannot reach download.pytorch.org; `make image` serves this machine's own wheel).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}
# Everything else: PyPI, or a mirror (pip reads PIP_INDEX_URL; the ARG never reaches the image).
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.txt /opt/venv/requirements.txt
# torch alone from the variant's index (--no-deps: that index need hold nothing else); then the
# rest, torch's own dependencies included, from PIP_INDEX_URL.
# Lambda's filesystem is read-only: an uncompiled import would be compiled again at every cold
# start. unchecked-hash keeps the .pyc valid whatever the file times become in the final stage.
# torch 2.13 ships one test helper in Python 3.12 syntax, which 3.11 cannot compile and nothing
# imports: that one file is skipped.
RUN pip install --no-deps --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
    && pip install -r /opt/venv/requirements.txt awslambdaric==4.2.2 \
    && python -m compileall -q -j 0 --invalidation-mode unchecked-hash \
        -x '/site-packages/torch/testing/_internal/py312_intrinsics\.py$' /opt/venv

# -- rie: AWS's Lambda Runtime Interface Emulator, so the image can be tried locally as AWS's base
# images can (docs/lambda.md): the binary alone, from the aws-sam-cli wheel on PyPI, hash checked.
FROM venv AS rie
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG SAM_CLI_VERSION=1.170.0
ARG SAM_CLI_SHA256=24ebaf5ecba38dc1758089968cb89ab61e124b84e92a344fc7a2771a47f4d0bf
RUN pip download --no-deps --only-binary=:all: --dest /tmp/sam "aws-sam-cli==${SAM_CLI_VERSION}" \
    && echo "${SAM_CLI_SHA256}  /tmp/sam/aws_sam_cli-${SAM_CLI_VERSION}-py3-none-any.whl" \
        > /tmp/sam/SHA256SUMS \
    && sha256sum --check --strict /tmp/sam/SHA256SUMS \
    && python -c "import platform, shutil, sys, zipfile; \
arch = {'x86_64': 'x86_64', 'aarch64': 'arm64'}[platform.machine()]; \
wheel = zipfile.ZipFile(sys.argv[1]); \
shutil.copyfileobj(wheel.open('samcli/local/rapid/aws-lambda-rie-' + arch), open(sys.argv[2], 'wb'))" \
        "/tmp/sam/aws_sam_cli-${SAM_CLI_VERSION}-py3-none-any.whl" /usr/local/bin/aws-lambda-rie \
    && chmod 0755 /usr/local/bin/aws-lambda-rie \
    && rm -rf /tmp/sam

# -- weights: the tiny random-weight model baked in (BAKE_MODEL=tiny), or nothing (none) ---------
FROM venv AS weights
ARG BAKE_MODEL=tiny
COPY infra/scripts/build_tiny_model.py /tmp/build_tiny_model.py
RUN mkdir -p /opt/thaw/model \
    && if [ "${BAKE_MODEL}" = "tiny" ]; then \
         python /tmp/build_tiny_model.py --out /opt/thaw/model; \
       fi

# -- app: thaw's code, bytecode compiled ---------------------------------------------------------
FROM ${PYTHON_IMAGE} AS app
WORKDIR /app
COPY runtime/ runtime/
COPY handler/ handler/
COPY infra/docker/ infra/docker/
COPY infra/scripts/ infra/scripts/
RUN python -m compileall -q -j 0 --invalidation-mode unchecked-hash /app

# -- the image: the venv stage's layers, then the weights, then the code --------------------------
# Built on the venv stage rather than copying /opt/venv into a fresh base: the 1.3 GB layer is the
# same one, and a rebuild never copies it again (nor hashes it to find a COPY in the cache).
FROM venv
LABEL org.opencontainers.image.title="thaw" \
      org.opencontainers.image.description="A diffusers text-to-image model for scale-to-zero platforms"
# Lambda runs the image as its own user whatever USER says; elsewhere run as a plain user. Both
# may write only under /tmp (Lambda's filesystem is read-only), hence THAW_CACHE_DIR there. The
# standard library is compiled too: a base image may ship it without bytecode.
RUN groupadd --system --gid 10001 thaw \
    && useradd --system --uid 10001 --gid thaw --home-dir /app --shell /usr/sbin/nologin thaw \
    && python -m compileall -q -j 0 --invalidation-mode unchecked-hash \
        "$(python -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')"
# AWS's emulator (9 MB) changes with its pin only; `--entrypoint aws-lambda-rie` runs it.
COPY --from=rie /usr/local/bin/aws-lambda-rie /usr/local/bin/aws-lambda-rie
COPY --from=weights /opt/thaw/model /opt/thaw/model
COPY --from=app /app /app
# The log stream is JSON lines; transformers writes plain text of its own: warnings through its
# own handler (the "requires torchvision" notices at every load), hence TRANSFORMERS_VERBOSITY,
# and a "Loading weights" progress bar, hence HF_HUB_DISABLE_PROGRESS_BARS.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_VERBOSITY=error \
    HF_HUB_DISABLE_PROGRESS_BARS=1 \
    THAW_MODEL=/opt/thaw/model \
    THAW_CACHE_DIR=/tmp/thaw-cache \
    THAW_HOST=0.0.0.0 \
    THAW_PORT=8080
WORKDIR /app
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/opt/venv/bin/python", "/app/infra/docker/entrypoint.py"]
CMD ["handler.lambda_function.handler"]
