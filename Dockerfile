# The pulsehub binary in a small image (used by docker-compose.yml), with
# pulsehub-simulate beside it to feed a hub with demo events.
FROM rust:1-bookworm AS build
# librdkafka is built from the rdkafka crate's source (cmake); OpenSSL's
# headers are in the image already.
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release -p pulsehub -p pulsehub-simulate

FROM debian:bookworm-slim
# The binaries link OpenSSL (Kafka over TLS) and zlib.
RUN apt-get update && apt-get install -y --no-install-recommends libssl3 zlib1g ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/pulsehub /usr/local/bin/pulsehub
COPY --from=build /src/target/release/pulsehub-simulate /usr/local/bin/pulsehub-simulate
ENV PULSEHUB_BIND=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["pulsehub"]
CMD ["serve"]
