# Build: docker build -t mithril-gate .
# Run:   docker run -p 8080:8080 -p 9901:9901 -e DATABASE_URL=postgres://... mithril-gate

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY sql sql
RUN cargo build --release --locked --bin mithril-gate

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gate
COPY --from=build /src/target/release/mithril-gate /usr/local/bin/mithril-gate
COPY schema /etc/mithril-gate/schema
COPY policies /etc/mithril-gate/policies
ENV MITHRIL_GATE_SCHEMA=/etc/mithril-gate/schema \
    MITHRIL_GATE_POLICIES=/etc/mithril-gate/policies \
    MITHRIL_GATE_LISTEN=0.0.0.0:8080 \
    MITHRIL_GATE_ADMIN_LISTEN=0.0.0.0:9901
USER 10001
EXPOSE 8080 9901
ENTRYPOINT ["mithril-gate"]
CMD ["serve"]
