# Image for raydx on a Ray cluster: the same pins as pyproject.toml, so the driver,
# the Tune trials and the fold workers run identical code.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN apt-get update && apt-get install -y --no-install-recommends git make \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/raydx
COPY pyproject.toml README.md ./
COPY raydx ./raydx
COPY search_spaces ./search_spaces
RUN pip install --upgrade pip && pip install .

# Ray head/worker processes are started by the cluster launcher or KubeRay.
CMD ["raydx", "--help"]
