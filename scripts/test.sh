#!/usr/bin/env bash
# Runs every test: formatting, lints, unit and process tests (nextest when
# installed, cargo test otherwise), the Python client's tests, the
# shell-scripted scenarios, the dashboard in a headless browser, benchmark
# smoke runs, the deployment check and the network-namespace cluster suite.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

scripts/setup.sh
cargo fmt --all -- --check
# The worker library's optional inbox (its tests and example) is linted and
# tested too: the features are named here, off by default in the library.
INBOX_FEATURES=orderly-worker/inbox-sqlite,orderly-worker/inbox-postgres
cargo clippy --workspace --all-targets --features "$INBOX_FEATURES" --quiet -- -D warnings
cargo build --workspace --bins --quiet
# The inbox example is the handler process of producer-cli's exactly-once tests.
cargo build -p orderly-worker --examples --features inbox-sqlite,inbox-postgres --quiet
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --features "$INBOX_FEATURES" --no-fail-fast
else
    cargo test --workspace --features "$INBOX_FEATURES" --no-fail-fast
fi
# A short fuzzing run of the wire decoder and the journal reader.
scripts/fuzz.sh "${ORDERLY_FUZZ_SECONDS:-20}"
# The Python client against the debug binaries (its own venv in
# target/python-venv), the protocol vectors included.
ORDERLY_BIN_DIR="$ROOT/target/debug" scripts/test-python.sh
ORDERLY_BIN_DIR="$ROOT/target/debug" tests/run.sh
# The broker's dashboard in Debian's chromium (playwright-core).
ORDERLY_BIN_DIR="$ROOT/target/debug" tests/browser/run.sh
# The benchmark's script, single broker beside a group of three, as a
# smoke run on the debug binaries: it fails if an order is lost (the
# figures come from `bench/run.sh --group 3` on a release build).
ORDERLY_BIN_DIR="$ROOT/target/debug" bench/run.sh --group 3 --orders 2000 --rate-orders 500 --runs 1 --framing packed
# And with CURVE on everywhere (`--curve`: keys from the binaries' keygen).
ORDERLY_BIN_DIR="$ROOT/target/debug" bench/run.sh --curve on --orders 1000 --rate 0 --runs 1 --framing packed
# The wire-floor benchmark's script likewise (libzmq alone, plaintext and CURVE).
ORDERLY_BIN_DIR="$ROOT/target/debug" bench/floor.sh --orders 300 --runs 1
# The handler benchmark's script likewise (noop, serve, the Python worker).
ORDERLY_BIN_DIR="$ROOT/target/debug" bench/handlers.sh --orders 300 --runs 1
# The outbox relay's benchmark script (a private PostgreSQL, a backlog and a
# paced writer) as a smoke run; figures come from `bench/relay.sh` in release.
ORDERLY_BIN_DIR="$ROOT/target/debug" bench/relay.sh --smoke
deploy/verify.sh
ORDERLY_BIN_DIR="$ROOT/target/debug" tests/netns/run.sh
