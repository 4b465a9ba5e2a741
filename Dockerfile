# syntax=docker/dockerfile:1
#
# One image per service, selected with the SERVICE build argument:
#   docker build --build-arg SERVICE=order-service --build-arg PORT=8080 -t orderflow/order-service .
# The binary is linked statically against musl and runs on distroless/static as a non-root user
# on a read-only root filesystem (it writes nothing to disk). The dependency layer is cached by
# cargo-chef, so a source change rebuilds only the workspace crates.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS chef
# musl-tools: ring's C parts need musl-gcc for the static target. Versions come from the
# pinned Debian release; pinning each package would break on every security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl \
    && cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --target x86_64-unknown-linux-musl --recipe-path recipe.json
COPY . .
ARG SERVICE=order-service
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin "${SERVICE}" \
    && cp "target/x86_64-unknown-linux-musl/release/${SERVICE}" /service

FROM gcr.io/distroless/static-debian12:nonroot
ARG SERVICE=order-service
ARG PORT=8080
LABEL org.opencontainers.image.title="orderflow ${SERVICE}" \
      org.opencontainers.image.source="https://github.com/orderflow/orderflow" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /service /service
ENV HTTP_ADDR=0.0.0.0:${PORT} \
    LOG_FORMAT=json
USER 65532:65532
EXPOSE ${PORT}
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/service", "healthcheck"]
ENTRYPOINT ["/service"]
