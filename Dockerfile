# syntax=docker/dockerfile:1
#
# One image per binary, selected with the SERVICE build argument, for linux/amd64 and linux/arm64:
#   docker build --build-arg SERVICE=order-service --build-arg PORT=8080 -t orderflow/order-service .
#   docker buildx build --platform linux/amd64,linux/arm64 --build-arg SERVICE=… .   # both at once
# The build stages run on the builder's own platform (BUILDPLATFORM) and cross-compile to the
# image's (TARGETARCH): an arm64 image costs an amd64 runner a second compile, not an emulated
# one. The binary is linked statically against musl — zig (through cargo-zigbuild) is the C
# cross compiler and linker for ring and mimalloc on both targets — and runs on
# distroless/static as a non-root user on a read-only root filesystem (it writes nothing to
# disk). The dependency layer is cached by cargo-chef, so a source change rebuilds only the
# workspace crates. The release workflow (.github/workflows/release.yml) passes VERSION and
# REVISION for the OCI labels; a local build says `dev`.

ARG RUST_VERSION=1.95

FROM --platform=$BUILDPLATFORM rust:${RUST_VERSION}-slim-bookworm AS chef
# python3-venv: zig and cargo-zigbuild come from PyPI, pinned by hash (scripts/zig-tools.txt),
# into a venv of their own. Debian packages come from the pinned release; pinning each would
# break on every security update.
COPY scripts/zig-tools.txt /tmp/zig-tools.txt
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/zig \
    && /opt/zig/bin/pip install --no-cache-dir --require-hashes --no-deps -r /tmp/zig-tools.txt \
    && rustup target add x86_64-unknown-linux-musl aarch64-unknown-linux-musl \
    && cargo install cargo-chef --locked --version 0.1.78
ENV PATH="/opt/zig/bin:${PATH}"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
ARG TARGETARCH
# The Rust target of the image's architecture; any other is refused rather than built wrong.
RUN case "${TARGETARCH}" in \
      amd64) echo x86_64-unknown-linux-musl ;; \
      arm64) echo aarch64-unknown-linux-musl ;; \
      *) echo "unsupported TARGETARCH '${TARGETARCH}': build linux/amd64 or linux/arm64" >&2; exit 1 ;; \
    esac > /rust-target
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --zigbuild --target "$(cat /rust-target)" --recipe-path recipe.json
COPY . .
ARG SERVICE=order-service
RUN cargo zigbuild --release --locked --target "$(cat /rust-target)" --bin "${SERVICE}" \
    && cp "target/$(cat /rust-target)/release/${SERVICE}" /service

FROM gcr.io/distroless/static-debian12:nonroot
ARG SERVICE=order-service
ARG PORT=8080
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="orderflow ${SERVICE}" \
      org.opencontainers.image.description="orderflow ${SERVICE}: an event-driven order system on NATS JetStream" \
      org.opencontainers.image.source="https://github.com/orderflow/orderflow" \
      org.opencontainers.image.url="https://github.com/orderflow/orderflow" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /service /service
ENV HTTP_ADDR=0.0.0.0:${PORT} \
    LOG_FORMAT=json
USER 65532:65532
EXPOSE ${PORT}
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/service", "healthcheck"]
ENTRYPOINT ["/service"]
