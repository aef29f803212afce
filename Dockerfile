# audiokit server image: `audiokit serve` on port 8765 with the shipped models.
#   CPU (default):  docker build -t audiokit .
#   CUDA:           docker build -t audiokit:cuda --build-arg VARIANT=cuda .
#   run:            docker run --rm -p 8765:8765 audiokit            (then http://localhost:8765/)
# VARIANT picks the base image and the torch build: cpu = Debian slim Python with torch's CPU wheel;
# cuda = NVIDIA's CUDA runtime with torch's CUDA wheel, for `audiokit train --device cuda` and
# `audiokit bench --device cuda` in the image (`audiokit serve` runs its streams on the CPU in both).
ARG VARIANT=cpu

FROM python:3.11-slim-bookworm AS base-cpu
ENV TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG DEBIAN_FRONTEND=noninteractive
# g++: pesq has no binary wheel (it compiles at `pip install`), and `audiokit serve --compile aoti`
# builds its step libraries with it
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*

FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS base-cuda
ENV TORCH_INDEX=https://download.pytorch.org/whl/cu128
# Ubuntu's images lack tzdata: pulled in as a dependency, its configuration would ask for a time zone on
# the build's absent terminal and stall the build (an ARG: the running image keeps the default frontend)
ARG DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev g++ \
    && rm -rf /var/lib/apt/lists/*

# hadolint ignore=DL3006
FROM base-${VARIANT} AS runtime
ARG DEBIAN_FRONTEND=noninteractive
# ffmpeg reads m4a/webm/...; opus-tools runs the Opus baseline of `audiokit eval`
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg opus-tools curl \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/audiokit
ENV PATH=/opt/audiokit/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# ninja: torch builds the C++ kernels of kernels/cpu with it on first use (float16/int8 weights with
# --compile aoti, entropy-coded .akc decoding); without it they fall back to slower torch code
# hadolint ignore=DL3013
RUN pip install --no-cache-dir "torch==2.13.0" --index-url "$TORCH_INDEX" \
    && pip install --no-cache-dir ninja
WORKDIR /src
# the dependencies first, in a layer of their own, so that a change to the package's code does not
# reinstall them (nor compile pesq again); they are not pinned: the newest releases that pyproject.toml's
# lower bounds admit
COPY pyproject.toml ./
# hadolint ignore=DL3013
RUN python3 -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep=chr(10))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY README.md LICENSE ./
COPY audiokit ./audiokit
COPY kernels ./kernels
COPY recipes ./recipes
# the package itself, installed in place (editable), so that it finds the kernel sources beside it
# (audiokit/ops/cpp.py looks in ../kernels) and recipes/ is at hand for `audiokit train`
RUN pip install --no-cache-dir --no-deps -e . \
    && useradd --create-home --uid 10001 audiokit
USER 10001
WORKDIR /home/audiokit
# the user's cache (compiled steps, kernels) and training runs: a named volume mounted on a folder of the
# image starts as a copy of it, owned by the user (on a missing one Docker makes it root's, unwritable)
RUN mkdir -p /home/audiokit/.cache/audiokit /home/audiokit/runs
EXPOSE 8765
# a long start period: with --compile aoti the server builds its step libraries before it answers
# (minutes for the codec on a fresh cache), and failed checks during it do not count
HEALTHCHECK --interval=30s --timeout=5s --start-period=20m --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8765/healthz"]
ENTRYPOINT ["audiokit", "serve", "--host", "0.0.0.0", "--port", "8765"]
