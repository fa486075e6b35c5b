# Switchboard container image: build with the Rust toolchain, run on a slim Debian as a
# non-root user. docker-compose.yml builds it for its three gateway nodes.
#
#   docker build -t switchboard .
#   docker run -p 8080:8080 -v $PWD/my.toml:/etc/switchboard/switchboard.toml:ro switchboard

FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first, so editing the sources does not rebuild them.
COPY Cargo.toml Cargo.lock ./
# The workspace's other member (the load generator) only needs its manifest here.
COPY load-tests/Cargo.toml ./load-tests/
RUN mkdir src load-tests/src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > load-tests/src/main.rs \
    && cargo build --release --locked -p switchboard \
    && rm -rf src
COPY config ./config
COPY src ./src
# The placeholder build left fresher fingerprints; make sure the real sources win.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked -p switchboard \
    && cp target/release/switchboard /usr/local/bin/switchboard

FROM debian:bookworm-slim
# TLS roots are compiled in (webpki-roots), so no ca-certificates package is needed.
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin switchboard
COPY --from=build /usr/local/bin/switchboard /usr/local/bin/switchboard
# The compose configuration; mount your own over it (or set SWITCHBOARD__… variables).
COPY deploy/switchboard.toml /etc/switchboard/switchboard.toml
USER switchboard
# 8080: WebSocket clients. 8081: the management API (keep it on a private network).
EXPOSE 8080 8081
STOPSIGNAL SIGTERM
ENTRYPOINT ["switchboard", "serve", "--config", "/etc/switchboard/switchboard.toml"]
