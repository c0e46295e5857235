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

# The load benchmark (arrives with `switchyard bench`).
bench:
    @echo "switchyard bench is not part of this build yet" && exit 1

# What CI runs.
ci:
    bash .ci/run
