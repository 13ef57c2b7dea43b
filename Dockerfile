# The ringnode image for deploy/kubernetes: built in the Rust image, run from a slim Debian.
#   docker build -t ringnode:latest .
# io_uring needs a seccomp profile that allows it (deploy/kubernetes/seccomp/); with Docker:
#   docker run --rm --network host \
#     --security-opt seccomp=deploy/kubernetes/seccomp/ringnode.json ringnode:latest ringnode info
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin ringnode

FROM debian:bookworm-slim
COPY --from=build /src/target/release/ringnode /usr/local/bin/ringnode
# Not root: ringnode needs no privilege (it raises its open-file limit to the hard limit only).
USER 65532:65532
CMD ["ringnode", "--help"]
