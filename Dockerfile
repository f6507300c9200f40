# The pulsehub binary in a small image (used by docker-compose.yml).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin pulsehub

FROM debian:bookworm-slim
COPY --from=build /src/target/release/pulsehub /usr/local/bin/pulsehub
ENV PULSEHUB_BIND=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["pulsehub"]
CMD ["serve"]
