# syntax=docker/dockerfile:1
# One image for every AIMTP process: `docker run aimtp server|relay|trigger|watcher|...`.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# The uv the Makefile pins, from PyPI like every other dependency.
RUN pip install --no-cache-dir uv==0.13.9
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# Dependencies first: this layer is reused until the lock file changes.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project
COPY README.md ./
COPY db ./db
COPY aimtp ./aimtp
COPY app ./app
COPY outbox ./outbox
COPY consumers ./consumers
COPY sweeper ./sweeper
COPY controller_sim ./controller_sim
COPY proto ./proto
# The gRPC modules are generated at build time, as `make proto` does, with the
# grpcio-tools of the lock file in a throwaway environment (it is a dev dependency).
RUN uv run --frozen --no-sync --with "grpcio-tools==$(sed -n '/^name = "grpcio-tools"/{n;s/version = "\(.*\)"/\1/p}' uv.lock)" \
      python -m grpc_tools.protoc -I proto --python_out=. --grpc_python_out=. proto/aimtp/v1/dags.proto
# The project stays installed from /app (editable): `aimtp db init` reads
# db/schema.sql relative to the source tree.
RUN uv sync --frozen --no-dev

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 aimtp \
 && useradd --system --uid 10001 --gid aimtp --no-create-home --shell /usr/sbin/nologin aimtp
# Owned by root and read-only to the process, which fits readOnlyRootFilesystem.
COPY --from=build /app /app
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /app
# Numeric, so Kubernetes can verify runAsNonRoot without resolving a name.
USER 10001:10001
EXPOSE 8000 8001 9101 9102 9103 50051
ENTRYPOINT ["aimtp"]
CMD ["server"]
