# promod and promoctl in a small runtime image (docker compose --profile
# monitoring builds it; see docker-compose.yml).
#
#   docker build -t promo .
#   docker run --rm -e PROMO_JWT_SECRET=... promo --roles gateway,coupon

# Build: the pinned toolchain (rust-toolchain.toml) and what the crates need
# to compile: protoc for tonic, cmake and headers for librdkafka.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler cmake libcurl4-openssl-dev zlib1g-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The cache mounts keep the registry and target across builds; the binaries
# are copied out of the mounted target before it goes away.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin promod --bin promoctl \
 && cp target/release/promod target/release/promoctl /usr/local/bin/

# Run: only the shared libraries librdkafka links (curl, zlib, OpenSSL) and
# CA certificates, as an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libcurl4 zlib1g libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home promo
COPY --from=build /usr/local/bin/promod /usr/local/bin/promoctl /usr/local/bin/
USER promo
# gateway REST, the service roles' REST (health, metrics) and gRPC.
EXPOSE 4000 3001 3002 3003 50051 50052 50053
ENTRYPOINT ["/usr/local/bin/promod"]
