# One image for every service; the command picks which one runs (`postback-pipeline COMMAND`):
#   docker run IMAGE                  the edge
#   docker run IMAGE processor        the processor
#   docker run IMAGE metrics          the metrics service
#   docker run IMAGE trace ID         where is my postback? (any command; IMAGE --help lists them)
# Settings come from the environment (README.md, "Settings"); the image already binds
# 0.0.0.0, as a container must.
#
# Two stages: the builder installs the pinned dependencies (constraints.txt) into a virtualenv,
# from wheels only, so no compiler is ever needed; the final stage copies that virtualenv onto
# the same slim base and runs it as a numeric non-root user.
#
# The base is pinned to a patch release; pin its digest too where your registry allows
# (`--build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:...`).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder

# The base image's pip installs into a virtualenv that has no pip (nor setuptools) of its own,
# so the copied environment holds only what the services import.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ONLY_BINARY=:all: \
    PIP_CONSTRAINT=/src/constraints.txt \
    PIP_PYTHON=/opt/venv/bin/python
RUN python -m venv --without-pip /opt/venv
WORKDIR /src

# Dependencies first: this layer is rebuilt only when pyproject.toml or constraints.txt change,
# not on every source edit. The runtime dependencies are read from pyproject.toml and pinned by
# constraints.txt (development tools are not installed).
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && pip install --requirement requirements.txt

# Then the project itself (pure Python), without touching the dependencies installed above.
# Its build backend (setuptools) is the one source install, in pip's throwaway build env.
COPY README.md ./
COPY common ./common
COPY consumers ./consumers
COPY devstack ./devstack
COPY ingest ./ingest
COPY simulator ./simulator
COPY postback_pipeline ./postback_pipeline
RUN PIP_ONLY_BINARY=setuptools pip install --no-deps . \
    && /opt/venv/bin/python -m compileall -q /opt/venv


FROM ${PYTHON_IMAGE}

ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="postback-pipeline" \
      org.opencontainers.image.description="Postback ingestion pipeline: a thin HTTP edge into Kafka, and exactly-once consumers behind it" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

COPY --from=builder /opt/venv /opt/venv

# Bytecode was compiled in the builder; the root filesystem may be read-only at run time.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EDGE_HOST=0.0.0.0 \
    PROCESSOR_HOST=0.0.0.0 \
    METRICS_HOST=0.0.0.0

# An empty, root-owned working directory: `python -c` (the chart's test hook) puts it first
# on sys.path.
WORKDIR /app
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8080 9101 9102

# Every service handles SIGTERM itself (drain, commit, leave the group), so the console
# script's python runs as PID 1 directly, without a shell in between to swallow the signal.
ENTRYPOINT ["postback-pipeline"]
CMD ["edge"]
