# Switchyard tasks. `just --list` shows them.

# Build every crate and binary.
build:
    cargo build --workspace --all-targets

# The README's test command.
test:
    cargo test --workspace

# Clippy with warnings as errors, as CI runs it.
lint:
    cargo clippy --workspace --all-targets -- -D warnings

# Format the code.
fmt:
    cargo fmt --all

# Everything in one process with simulated providers.
up *ARGS:
    cargo run -p switchyard -- up {{ARGS}}

# Validate a catalog file.
check-catalog FILE:
    cargo run -p switchyard -- check-catalog {{FILE}}

# The standard benchmark: the simulator at 0 and 10 ms, directly and through the whole cluster
# (router, policy, billing, prober, Redis; budgets on) in interleaved pairs of windows at several
# rates, streams, and the router's memory with 1,000 open streams. Writes
# target/bench/standard.md. Needs redis-server.
bench *ARGS:
    cargo run --release -p switchyard -- bench --standard {{ARGS}}

# What CI runs.
ci:
    bash .ci/run
