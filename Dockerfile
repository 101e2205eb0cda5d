# Image for raydx on a Ray cluster: the same pins as pyproject.toml, so the driver,
# the Tune trials and the fold workers run identical code.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
# rsync and ssh: `ray up` copies its config into the head's container with rsync (run
# through `docker exec`), and the head's autoscaler reaches the worker nodes with ssh and
# rsync from inside it (Ray's command_runner.py). wget: KubeRay 1.5's liveness and
# readiness probes run `wget ... | grep success` in the Ray containers.
RUN apt-get update && apt-get install -y --no-install-recommends \
        git make rsync openssh-client wget \
    && rm -rf /var/lib/apt/lists/*
# On a GPU node, `ray up` starts the container with --runtime=nvidia only (no --gpus),
# and the NVIDIA runtime hands a container its GPUs and the CUDA driver libraries only
# where these say so (CUDA base images set them; python:3.11-slim does not).
# torch 2.14.1's CUDA 13.0 build needs an NVIDIA driver R580 or later on the node.
ENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility

WORKDIR /opt/raydx
COPY pyproject.toml README.md ./
COPY raydx ./raydx
COPY search_spaces ./search_spaces
RUN pip install --upgrade pip && pip install .

# Ray head/worker processes are started by the cluster launcher or KubeRay.
CMD ["raydx", "--help"]
