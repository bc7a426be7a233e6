#!/usr/bin/env bash
# Installs what the tests need and runs every test. CI runs exactly this
# (.ci/run). Takes a few minutes on a 2-core machine, most of it compiling.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

say "toolchain"
command -v cargo >/dev/null || { echo "cargo is missing: install Rust from https://rustup.rs" >&2; exit 1; }
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "cargo-nextest is missing; installing it (cargo install --locked cargo-nextest)"
  cargo install --locked cargo-nextest
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

say "format"
cargo fmt --all -- --check

say "build (one build, shared by lints and tests)"
cargo build --workspace --all-targets --locked

say "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "tests"
cargo nextest run --workspace --locked --no-fail-fast --profile ci
cargo test --workspace --doc --locked
