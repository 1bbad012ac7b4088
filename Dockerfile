# Build: docker build -t mithril-gate .
# Run:   docker run -p 8080:8080 -p 9901:9901 -e DATABASE_URL=postgres://... mithril-gate
# docs/operating.md describes the image and how to configure it.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# Cargo reads every target the manifest declares, the bench included,
# before it builds the binary alone.
COPY benches benches
COPY src src
COPY sql sql
RUN cargo build --release --locked --bin mithril-gate

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gate
COPY --from=build /src/target/release/mithril-gate /usr/local/bin/mithril-gate
COPY schema /etc/mithril-gate/schema
COPY policies /etc/mithril-gate/policies
COPY config/mithril-gate.example.toml /etc/mithril-gate/mithril-gate.example.toml
# The default `schema` and `policies` folders are relative to the working
# directory, so the shipped ones are found without a setting that would
# outrank a mounted config file.
WORKDIR /etc/mithril-gate
# Reachable from outside the container. Environment variables outrank a
# config file: set these two with `-e` or the pod's `env` to change them.
ENV MITHRIL_GATE_LISTEN=0.0.0.0:8080 \
    MITHRIL_GATE_ADMIN_LISTEN=0.0.0.0:9901
USER 10001
# 8080: the public API. 9901: /healthz, /readyz and /metrics for probes
# and Prometheus; do not publish it beyond the cluster.
EXPOSE 8080 9901
ENTRYPOINT ["mithril-gate"]
CMD ["serve"]
