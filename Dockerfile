# The pulsehub binary in a small image (used by docker-compose.yml), with
# pulsehub-simulate beside it to feed a hub with demo events.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p pulsehub -p pulsehub-simulate

FROM debian:bookworm-slim
COPY --from=build /src/target/release/pulsehub /usr/local/bin/pulsehub
COPY --from=build /src/target/release/pulsehub-simulate /usr/local/bin/pulsehub-simulate
ENV PULSEHUB_BIND=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["pulsehub"]
CMD ["serve"]
