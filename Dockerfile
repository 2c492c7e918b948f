# syntax=docker/dockerfile:1
#
# Container image of ims-operator: a static (musl) binary on distroless/static, non-root.
#
#   docker build -t ims-operator:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/ims-operator:0.1.0 --push .
#
# The Helm chart (charts/ims-operator) runs it as `ims-operator run --config ...`.

ARG RUST_VERSION=1.95

# ---------------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS builder

# musl-tools: musl-gcc, needed to compile ring's C/assembly parts (rustls) for the musl target.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*

# Set by buildx for the platform being built (amd64 or arm64); plain `docker build` on an
# x86_64 host leaves it empty, which means amd64.
ARG TARGETARCH
RUN case "${TARGETARCH:-amd64}" in \
      amd64) echo x86_64-unknown-linux-musl  > /rust-target ;; \
      arm64) echo aarch64-unknown-linux-musl > /rust-target ;; \
      *) echo "unsupported TARGETARCH ${TARGETARCH}" >&2; exit 1 ;; \
    esac \
 && rustup target add "$(cat /rust-target)"

WORKDIR /src
COPY . .

# Cache mounts keep the crates.io downloads and the target directory between builds.
# --locked: build exactly what Cargo.lock pins. The binary is copied out of the cache mount.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    target="$(cat /rust-target)" \
 && cargo build --release --locked --target "$target" --bin ims-operator \
 && cp "target/$target/release/ims-operator" /ims-operator \
 && strip /ims-operator

# Fail the build if the binary is not static (distroless/static has no libc) or does not run.
RUN if readelf -d /ims-operator | grep -q NEEDED; then \
      echo "ims-operator is dynamically linked" >&2; readelf -d /ims-operator >&2; exit 1; \
    fi \
 && /ims-operator --version

# ---------------------------------------------------------------------------------------------
FROM gcr.io/distroless/static-debian12:nonroot

LABEL org.opencontainers.image.title="ims-operator" \
      org.opencontainers.image.description="Kubernetes operator for private-image sharing between tenants" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /ims-operator /ims-operator

# distroless "nonroot" user; the Helm chart also sets runAsUser/runAsGroup 65532.
USER 65532:65532
# /livez, /readyz and /metrics.
EXPOSE 8080

ENTRYPOINT ["/ims-operator"]
CMD ["run"]
