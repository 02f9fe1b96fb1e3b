//! The broker binary's allocator settings take effect: mimalloc commits
//! its arenas on demand (a constructor sets it before the first
//! allocation; see the binary's `main.rs`), unless the environment says
//! otherwise. mimalloc's verbose start-up lists every option's value.

use assert_cmd::Command;

/// mimalloc's verbose line for the option, as this build reports it.
fn arena_eager_commit(env: &[(&str, &str)]) -> String {
    let mut cmd = Command::cargo_bin("orderly-broker").expect("binary built");
    cmd.arg("--version").env("MIMALLOC_VERBOSE", "1").env_remove("MIMALLOC_ARENA_EAGER_COMMIT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("orderly-broker --version runs");
    assert!(out.status.success(), "orderly-broker --version failed: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    stderr
        .lines()
        .find(|l| l.starts_with("option 'arena_eager_commit':"))
        .unwrap_or_else(|| panic!("mimalloc listed no arena_eager_commit option:\n{stderr}"))
        .trim()
        .to_string()
}

#[cfg(not(feature = "system-allocator"))]
#[test]
fn mimalloc_commits_arenas_on_demand_unless_the_environment_says_otherwise() {
    assert_eq!(arena_eager_commit(&[]), "option 'arena_eager_commit': 0");
    assert_eq!(arena_eager_commit(&[("MIMALLOC_ARENA_EAGER_COMMIT", "1")]), "option 'arena_eager_commit': 1");
}
