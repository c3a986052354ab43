# syntax=docker/dockerfile:1
# The receipts pipeline's Airflow image: the official apache/airflow image plus the pinned
# requirements, the `extractor` library, the DAGs, plugins and start-up files (deploy/).
#
# Two targets, one Dockerfile:
#   docker build --target cpu -t receipts-airflow:3.3.2 .       # api-server, scheduler, dag-processor,
#                                                               # triggerer, CPU worker (torch CPU wheel)
#   docker build --target gpu -t receipts-airflow-gpu:3.3.2 .   # the GPU Celery worker (CUDA torch wheel)
# `docker compose build` builds both (see docker-compose.yaml). The image is the unit of
# deployment: DAGs and library are baked in, so every host of a multi-host deployment runs
# exactly the same code.

ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11

FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION} AS base
ARG AIRFLOW_VERSION

USER root
# libgomp1: OpenMP runtime for onnxruntime / torch CPU kernels; libglib2.0-0: OpenCV (RapidOCR).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 libglib2.0-0 \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    # Mount points of the shared volumes, owned by the airflow user so that fresh named
    # volumes inherit a writable owner (see docker-compose.yaml: /efs/...).
    && mkdir -p /efs/models /efs/pipeline/staging /efs/pipeline/data_docs \
    && chown -R airflow:root /efs \
    # The project's source tree: pip builds it in place (egg-info, build/) as airflow.
    && mkdir -p /opt/receipts && chown airflow:root /opt/receipts
USER airflow

# ---------------------------------------------------------------------------------------
# One stage per torch build; everything else is identical.
FROM base AS cpu-deps
# The CPU-only torch wheel: ~200 MB instead of the CUDA build's several GB.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG AIRFLOW_VERSION
COPY --chown=airflow:root requirements.txt /opt/receipts/requirements.txt
RUN TORCH_PIN="$(grep -E '^torch==' /opt/receipts/requirements.txt)" \
    && pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "${TORCH_PIN}" \
    && pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /opt/receipts/requirements.txt

FROM base AS gpu-deps
# PyPI's Linux x86_64 torch wheel is the CUDA build (CUDA runtime as nvidia-* wheels); set
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cu1XX to pick a specific CUDA version.
# The host needs only the NVIDIA driver and the NVIDIA Container Toolkit.
ARG TORCH_INDEX_URL=https://pypi.org/simple
ARG BITSANDBYTES_VERSION=0.50.2
ARG AIRFLOW_VERSION
COPY --chown=airflow:root requirements.txt /opt/receipts/requirements.txt
RUN TORCH_PIN="$(grep -E '^torch==' /opt/receipts/requirements.txt)" \
    && pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "${TORCH_PIN}" \
    && pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /opt/receipts/requirements.txt \
    # 8-bit / 4-bit quantisation (spec "quantization": "8bit" | "4bit") needs CUDA: GPU image only.
    && pip install --no-cache-dir "bitsandbytes==${BITSANDBYTES_VERSION}"

# ---------------------------------------------------------------------------------------
# The project itself, last so that code changes do not rebuild the dependency layers.
FROM gpu-deps AS gpu
COPY --chown=airflow:root pyproject.toml README.md /opt/receipts/
COPY --chown=airflow:root include /opt/receipts/include
RUN pip install --no-cache-dir --no-deps /opt/receipts
COPY --chown=airflow:root dags /opt/airflow/dags
COPY --chown=airflow:root plugins /opt/airflow/plugins
COPY --chown=airflow:root deploy /opt/airflow/deploy

# Last stage = the default target of a plain `docker build .`: the CPU image.
FROM cpu-deps AS cpu
COPY --chown=airflow:root pyproject.toml README.md /opt/receipts/
COPY --chown=airflow:root include /opt/receipts/include
RUN pip install --no-cache-dir --no-deps /opt/receipts
COPY --chown=airflow:root dags /opt/airflow/dags
COPY --chown=airflow:root plugins /opt/airflow/plugins
COPY --chown=airflow:root deploy /opt/airflow/deploy
