#!/usr/bin/env bash
# Runs every test: formatting, lints, unit and process tests (nextest when
# installed, cargo test otherwise), then the shell-scripted scenarios.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo build --workspace --bins --quiet
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
else
    cargo test --workspace --no-fail-fast
fi
# A short fuzzing run of the wire decoder and the journal reader.
scripts/fuzz.sh "${ORDERLY_FUZZ_SECONDS:-20}"
ORDERLY_BIN_DIR="$ROOT/target/debug" tests/run.sh
deploy/verify.sh
ORDERLY_BIN_DIR="$ROOT/target/debug" tests/netns/run.sh
