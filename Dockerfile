# Multi-stage build: compile with the full toolchain, ship a slim non-root image.
#   docker build -t firmcast .
#   docker run -p 8080:8080 -v $PWD/config.toml:/etc/firmcast/config.toml:ro \
#     -v $PWD/keys:/var/lib/firmcast/keys:ro -v firmcast-data:/var/lib/firmcast/data firmcast
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin firmcast && cp target/release/firmcast /usr/local/bin/firmcast

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/firmcast --create-home firmcast
COPY --from=build /usr/local/bin/firmcast /usr/local/bin/firmcast
USER firmcast
WORKDIR /var/lib/firmcast
# The config file is mounted; the container always listens on 8080.
ENV FIRMCAST_CONFIG=/etc/firmcast/config.toml \
    FIRMCAST__SERVER__LISTEN=0.0.0.0:8080
EXPOSE 8080
VOLUME ["/var/lib/firmcast/data"]
ENTRYPOINT ["firmcast"]
CMD ["serve"]
