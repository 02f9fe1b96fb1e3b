//! Architecture invariants as tests (rust-analyzer's `xtask/src/tidy.rs` is
//! the model): what ARCHITECTURE.md states as an absence fails here when it
//! stops being true.
//!
//! - The sans-IO code — `common` and every role's `core` — reads no clock,
//!   draws no randomness, and touches no ZeroMQ, file, socket, process or
//!   environment: time and randomness are passed in, so the cores are
//!   deterministic and the simulation reproduces any run from a seed.
//! - `common` depends only on crates that do no IO (an allowlist: a new
//!   dependency is a decision, written down here with its reason).
//! - The libraries users put in their Cargo.toml (`orderly-producer`,
//!   `orderly-worker`, and below them `common`, `journal`, `security`,
//!   `http`) carry no CLI crate.
//!
//! The checks read source text, so they are fast and need no build; a
//! comment may mention a forbidden name (lines are checked without their
//! `//` comments).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Names that mean IO, a clock or randomness, and why each is banned from
/// sans-IO code.
const FORBIDDEN: &[(&str, &str)] = &[
    ("Instant::now", "reads the clock: take `now: Millis` as an argument"),
    ("SystemTime", "reads the wall clock: take `now: Millis` as an argument"),
    ("std::time::Instant", "a clock type: cores use orderly_common::time::Millis"),
    ("zmq::", "touches ZeroMQ: only io modules own sockets"),
    ("zmq_sys", "touches ZeroMQ: only io modules own sockets"),
    ("std::fs", "touches files: only io modules (and the journal) do"),
    ("File::", "touches files: only io modules (and the journal) do"),
    ("OpenOptions", "touches files: only io modules (and the journal) do"),
    ("std::net", "touches sockets: only io modules own sockets"),
    ("TcpStream", "touches sockets: only io modules own sockets"),
    ("TcpListener", "touches sockets: only io modules own sockets"),
    ("UdpSocket", "touches sockets: only io modules own sockets"),
    ("std::process", "starts processes: only io modules and handlers do"),
    ("thread::sleep", "sleeps: a core answers poll_timeout instead"),
    ("std::thread", "starts threads: only io modules do"),
    ("std::env", "reads the environment: configuration is passed in"),
    ("rand::", "draws randomness: values are passed in (the incarnation, nonces)"),
    ("thread_rng", "draws randomness: values are passed in"),
    ("stdin()", "reads the terminal: only binaries do"),
    ("stdout()", "writes the terminal: only binaries do"),
];

/// The only dependencies `common` may have, and why each does no IO.
const COMMON_DEPENDENCIES: &[(&str, &str)] = &[
    ("serde", "derive and data model only"),
    ("serde_bytes", "byte-buffer serde helpers"),
    ("rmp-serde", "MessagePack encoding into buffers"),
    ("thiserror", "error derive"),
    ("sha2", "hashing of in-memory bytes"),
    ("hex", "hex text of in-memory bytes"),
    ("base64", "base64 text of in-memory bytes (non-JSON items in the handler view)"),
    ("serde_json", "validating and rendering JSON in memory (the handler view of an order)"),
];

/// Crates for command lines, terminals, process set-up and global
/// allocation: the binaries' business, never a library's.
const CLI_CRATES: &[&str] =
    &["clap", "indicatif", "mimalloc", "anyhow", "tracing-subscriber", "signal-hook", "orderly-cli", "toml"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the workspace").to_path_buf()
}

/// Every `.rs` file of the sans-IO code: `common/src`, and each role's
/// `core.rs` with its `core/` directory (whichever layout it has).
fn sans_io_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(&root.join("common/src"), &mut files);
    for role in ["broker", "worker", "producer", "peer"] {
        let single = root.join(role).join("src/core.rs");
        if single.exists() {
            files.push(single);
        }
        rust_files(&root.join(role).join("src/core"), &mut files);
    }
    files
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut paths: Vec<PathBuf> = entries.map(|e| e.expect("readable directory entry").path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The line without its `//` comment (a `//` inside a string literal is
/// rare enough in these files to cut too: the check only gets stricter).
fn code_part(line: &str) -> &str {
    line.find("//").map_or(line, |at| &line[..at])
}

/// Every use of a forbidden name in `text`, as "file:line: name (why)".
fn forbidden_uses(file: &str, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let code = code_part(line);
        for (name, why) in FORBIDDEN {
            if code.contains(name) {
                found.push(format!("{file}:{}: `{name}` {why}", index + 1));
            }
        }
    }
    found
}

#[test]
fn sans_io_code_does_no_io_and_reads_no_clock() {
    let root = workspace_root();
    let files = sans_io_files(&root);
    assert!(files.len() >= 8, "found only {files:?}: did the cores move? update sans_io_files");
    for role in ["broker", "worker", "producer", "peer"] {
        let prefix = root.join(role).join("src/core");
        assert!(
            files.iter().any(|f| f.starts_with(&prefix) || f.starts_with(root.join(role).join("src/core.rs"))),
            "no core found for {role}"
        );
    }
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable source file");
        let name = file.strip_prefix(&root).unwrap_or(file).display().to_string();
        problems.extend(forbidden_uses(&name, &text));
    }
    assert!(problems.is_empty(), "sans-IO code does IO:\n{}", problems.join("\n"));
}

#[test]
fn the_check_catches_a_clock_read_and_ignores_comments() {
    let text = "// Instant::now is mentioned here only\nlet now = std::time::Instant::now();\n";
    let found = forbidden_uses("x.rs", text);
    assert!(found.iter().all(|f| f.starts_with("x.rs:2:")), "{found:?}");
    assert!(found.iter().any(|f| f.contains("`Instant::now`")), "{found:?}");
}

/// The `[dependencies]` (normal, not dev or build) of one package.
fn normal_dependencies(root: &Path, package: &str) -> BTreeMap<String, toml::Value> {
    let path = root.join(package).join("Cargo.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let manifest: toml::Table = text.parse().unwrap_or_else(|e| panic!("{} is not TOML: {e}", path.display()));
    let mut deps: BTreeMap<String, toml::Value> = BTreeMap::new();
    if let Some(toml::Value::Table(table)) = manifest.get("dependencies") {
        deps.extend(table.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    // Target-specific dependencies are normal dependencies too.
    if let Some(toml::Value::Table(targets)) = manifest.get("target") {
        for target in targets.values() {
            if let Some(toml::Value::Table(table)) = target.get("dependencies") {
                deps.extend(table.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
    }
    deps
}

#[test]
fn common_depends_only_on_crates_without_io() {
    let root = workspace_root();
    let allowed: Vec<&str> = COMMON_DEPENDENCIES.iter().map(|(name, _)| *name).collect();
    let extra: Vec<String> =
        normal_dependencies(&root, "common").into_keys().filter(|name| !allowed.contains(&name.as_str())).collect();
    assert!(
        extra.is_empty(),
        "common gained dependencies {extra:?}: common does no IO, so a new dependency must be IO-free; \
         if it is, add it to COMMON_DEPENDENCIES in tests/tests/tidy.rs with the reason"
    );
}

#[test]
fn libraries_carry_no_cli_crates() {
    let root = workspace_root();
    for package in ["producer", "worker", "common", "journal", "security", "peer", "http"] {
        let deps = normal_dependencies(&root, package);
        let cli: Vec<&&str> = CLI_CRATES.iter().filter(|name| deps.contains_key(**name)).collect();
        assert!(
            cli.is_empty(),
            "{package}'s library depends on CLI crates {cli:?}: users who add it to their Cargo.toml would \
             compile them; put them in the binary's package"
        );
    }
}
