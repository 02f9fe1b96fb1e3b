#!/usr/bin/env bash
# Runs each cargo-fuzz target for SECONDS (default 30) from the seed corpus
# in fuzz/corpus/TARGET. cargo-fuzz needs nightly features; on the stable
# toolchain RUSTC_BOOTSTRAP=1 unlocks them. Installs cargo-fuzz if missing.
# A long run: scripts/fuzz.sh 3600
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SECONDS_PER_TARGET=${1:-30}
cd "$ROOT"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked --quiet
fi
export RUSTC_BOOTSTRAP=1
for target in decode journal; do
    corpus="$ROOT/fuzz/corpus/$target"
    work="$(mktemp -d "${TMPDIR:-/tmp}/orderly-fuzz-$target.XXXXXX")"
    cp -r "$corpus"/. "$work"/
    echo "fuzz: $target for ${SECONDS_PER_TARGET}s" >&2
    # Findings go to fuzz/artifacts/$target; the grown corpus stays in $work.
    cargo fuzz run --fuzz-dir fuzz "$target" "$work" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=1024 -print_final_stats=1 2>&1 |
        grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|==|SUMMARY|Done)" || true
    [ ! -d "fuzz/artifacts/$target" ] || [ -z "$(ls -A "fuzz/artifacts/$target")" ] ||
        { echo "fuzz: $target found crashes in fuzz/artifacts/$target" >&2; exit 1; }
    rm -rf "$work"
done
