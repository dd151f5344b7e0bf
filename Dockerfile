# hookflow's container image: the release binary on Debian slim, as a non-root user, with
# the compiled-in defaults and the example configuration under /etc/hookflow. No build
# tools, no sources. Build it from the repository root:
#   docker build -t hookflow:dev --build-arg VERSION=$(git describe --always) .
# Kubernetes probes the ops listener (/_liveness, /_readiness), so there is no HEALTHCHECK.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
# protoc and the well-known types build the Temporal protos; g++, make and libssl build
# librdkafka with TLS (SASL PLAIN and SCRAM need nothing more).
# Versions come from the pinned bookworm base image, not from apt pins.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        protobuf-compiler libprotobuf-dev g++ make pkg-config libssl-dev zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The same command as `make release`; a test keeps the two equal.
RUN cargo build --release --locked -p hookflow \
    && install -D target/release/hookflow /out/hookflow

FROM debian:bookworm-slim
ARG VERSION=dev
LABEL org.opencontainers.image.title="hookflow" \
      org.opencontainers.image.description="Reliable webhook delivery: Kafka to Temporal to signed HTTP" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/hookflow/hookflow" \
      org.opencontainers.image.licenses="MIT"
# CA roots for https endpoints; the TLS library librdkafka links.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 hookflow \
    && useradd --uid 10001 --gid hookflow --no-create-home --shell /usr/sbin/nologin hookflow
COPY --from=build /out/hookflow /usr/local/bin/hookflow
COPY config/default.toml config/production.example.toml /etc/hookflow/
USER 10001:10001
EXPOSE 9464 9465 8080
ENTRYPOINT ["/usr/local/bin/hookflow"]
CMD ["--config", "/etc/hookflow/production.example.toml", "run"]
