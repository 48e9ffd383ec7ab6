# syntax=docker/dockerfile:1
# thaw: one image, two ways in. On AWS Lambda (AWS_LAMBDA_RUNTIME_API set) the entry script hands
# the process to awslambdaric; anywhere else it serves HTTP with uvicorn on THAW_PORT (8080).
#
#   docker build -t thaw .                                    # CPU torch (Lambda has no GPU)
#   docker build -t thaw-gpu --build-arg TORCH_VARIANT=cu128 .  # CUDA torch for GPU platforms
#   docker build -t thaw --build-arg BAKE_MODEL=none .        # no weights: THAW_MODEL=s3://...

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# -- build: the virtual environment and the code, bytecode compiled ------------------------------
FROM ${PYTHON_IMAGE} AS build
# cpu for Lambda; a CUDA variant (cu126, cu128, ...) of the same torch release for GPU platforms.
ARG TORCH_VARIANT=cpu
# The torch pin of requirements.txt (a test keeps the two equal).
ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY requirements.txt ./
# torch first, from the variant's index; the rest from PyPI then finds it already satisfied.
RUN pip install --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
        "torch==${TORCH_VERSION}" \
    && pip install -r requirements.txt awslambdaric==4.2.2
COPY runtime/ runtime/
COPY handler/ handler/
COPY infra/docker/ infra/docker/
COPY infra/scripts/ infra/scripts/
# Lambda's filesystem is read-only: an uncompiled import would be compiled again at every cold
# start. unchecked-hash keeps the .pyc valid whatever the file times become in the final stage.
RUN python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/venv /app

# -- weights: the tiny random-weight model baked in (BAKE_MODEL=tiny), or nothing (none) ---------
FROM build AS weights
ARG BAKE_MODEL=tiny
RUN mkdir -p /opt/thaw/model \
    && if [ "${BAKE_MODEL}" = "tiny" ]; then \
         python infra/scripts/build_tiny_model.py --out /opt/thaw/model; \
       fi

# -- the image -----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="thaw" \
      org.opencontainers.image.description="A diffusers text-to-image model for scale-to-zero platforms"
# Lambda runs the image as its own user whatever USER says; elsewhere run as a plain user. Both
# may write only under /tmp (Lambda's filesystem is read-only), hence THAW_CACHE_DIR there.
RUN groupadd --system --gid 10001 thaw \
    && useradd --system --uid 10001 --gid thaw --home-dir /app --shell /usr/sbin/nologin thaw
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
COPY --from=weights /opt/thaw/model /opt/thaw/model
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    THAW_MODEL=/opt/thaw/model \
    THAW_CACHE_DIR=/tmp/thaw-cache \
    THAW_HOST=0.0.0.0 \
    THAW_PORT=8080
WORKDIR /app
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/opt/venv/bin/python", "/app/infra/docker/entrypoint.py"]
CMD ["handler.lambda_function.handler"]
