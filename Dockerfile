# One image for every component: `flotilla router`, `flotilla worker`, `flotilla gateway` and
# the CLI. tests/ops/test_deployment.py installs the package from exactly what this file
# copies, with the same extras, and imports every component from that install.

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/flotilla
WORKDIR /src
# The fleet's packages only: ops/ (benchmarks, fuzzing, deployment files) and tests/ are tools
# of the repository. README.md is the package's long description (pyproject's `readme`).
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY flotilla flotilla
COPY workers workers
COPY router router
COPY gateway gateway
# llm: litellm, for every model that is not `mock:` (the gateway's packages are core ones).
# The cache mount keeps downloaded wheels across builds, outside the image.
RUN --mount=type=cache,target=/root/.cache/pip /opt/flotilla/bin/pip install ".[llm]"

FROM python:3.11-slim-bookworm
RUN useradd --create-home --uid 10001 flotilla
COPY --from=build /opt/flotilla /opt/flotilla
# LITELLM_LOCAL_MODEL_COST_MAP: litellm reads its bundled price list instead of fetching one.
# The metrics and the gateway listen on every interface of the container, on fixed ports.
ENV PATH=/opt/flotilla/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    FLOTILLA_METRICS_HOST=0.0.0.0 \
    FLOTILLA_METRICS_PORT=9464 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=4000
USER flotilla
WORKDIR /home/flotilla
EXPOSE 4000 9464

# Healthy when the component answers on its port: a router's or worker's /metrics, or a
# gateway's /healthz (200 while NATS and Redis answer). A gateway has no metrics port and a
# router or worker no gateway port, so a container passes one probe at most; a failed probe
# prints one line (the health log), not a traceback.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD \
    for probe in "$FLOTILLA_METRICS_PORT/metrics" "$GATEWAY_PORT/healthz"; do \
        python -c "import sys, urllib.request; \
            sys.excepthook = lambda kind, error, trace: print(sys.argv[1], error); \
            urllib.request.urlopen(sys.argv[1], timeout=2)" \
            "http://127.0.0.1:$probe" && exit 0; \
    done; exit 1

ENTRYPOINT ["flotilla"]
CMD ["--help"]
