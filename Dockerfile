# The spendstream worker image: workers, `spendstream ingest` and the GPU exporter against Apache Kafka
# and a ClickHouse server. It carries neither the embedded engine (chdb) nor the local broker (tansu):
# set SPENDSTREAM_KAFKA_BOOTSTRAP and SPENDSTREAM_CLICKHOUSE_URL.
#
#   docker build -t spendstream:latest .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 spendstream
WORKDIR /app

# 1. Dependencies only, from pyproject.toml and a stand-in package: this layer is rebuilt when the
#    dependencies change, not on every code change.
COPY pyproject.toml README.md ./
RUN mkdir spendstream && touch spendstream/__init__.py \
    && pip install '.[worker,server]' \
    && pip uninstall -y spendstream \
    && rm -rf spendstream build

# 2. The code.
COPY spendstream ./spendstream
RUN pip install --no-deps . && rm -rf build

USER 10001
ENV SPENDSTREAM_DATA_DIR=/home/spendstream/data \
    SPENDSTREAM_OPS_ADDRESS=0.0.0.0:9464
EXPOSE 9464
# A worker serves /metrics, /healthz and /readyz there (the ingest server and the GPU exporter, run from
# this image too, do not): health checks are set per service (docker-compose.yml, deploy/kubernetes).
ENTRYPOINT ["spendstream"]
CMD ["worker"]
