//! The workspace's dependency and shape rules (ENGINE.md), checked on the sources the way
//! rust-analyzer's tidy test does: a rule broken here fails `cargo test`.

use std::fs;
use std::path::{Path, PathBuf};

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The file's code lines before its tests (`#[cfg(test)]`), without comments.
fn code_lines(path: &Path) -> Vec<(usize, String)> {
    // Test modules: `tests.rs` and `*_tests.rs`.
    if path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == "tests.rs" || n.ends_with("_tests.rs"))
    {
        return Vec::new();
    }
    let text = fs::read_to_string(path).unwrap();
    text.lines()
        .enumerate()
        .take_while(|(_, line)| line.trim() != "#[cfg(test)]")
        .map(|(i, line)| {
            (
                i + 1,
                line.split("//").next().unwrap_or_default().to_owned(),
            )
        })
        .filter(|(_, line)| !line.trim().is_empty())
        .collect()
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root()).unwrap().display().to_string()
}

/// Lines of files under `dir` (except those `exempt` keeps) that contain any of `words`.
fn offending(dir: &str, exempt: impl Fn(&str) -> bool, words: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for path in rust_files(&root().join(dir)) {
        let name = relative(&path);
        if exempt(&name) {
            continue;
        }
        for (number, line) in code_lines(&path) {
            if let Some(word) = words.iter().find(|w| line.contains(*w)) {
                found.push(format!("{name}:{number}: {word}"));
            }
        }
    }
    found
}

#[test]
fn only_net_names_the_transport_crates() {
    let found = offending(
        "engine/src",
        |name| name == "engine/src/net.rs" || name.starts_with("engine/src/net/"),
        &[
            "quinn::",
            "use quinn",
            "rustls::",
            "use rustls",
            "socket2::",
            "hyper::",
            "hyper_util::",
            "mdns_sd::",
        ],
    );
    assert!(
        found.is_empty(),
        "quinn/rustls/socket2/hyper/mdns-sd outside engine/src/net/: {found:#?}"
    );
}

#[test]
fn the_model_is_pure() {
    let found = offending(
        "engine/src",
        |name| !(name == "engine/src/model.rs" || name.starts_with("engine/src/model/")),
        &["tokio", "rusqlite", "std::fs", "use std::io", "fs::"],
    );
    assert!(
        found.is_empty(),
        "I/O or a runtime in engine/src/model/: {found:#?}"
    );
}

#[test]
fn the_engine_depends_on_no_adapter_crate() {
    let manifest = fs::read_to_string(root().join("engine/Cargo.toml")).unwrap();
    let dependencies = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    for adapter in ["axum", "clap", "ureq", "indicatif", "qrcode", "serde_json"] {
        assert!(
            !dependencies
                .lines()
                .any(|l| l.trim_start().starts_with(adapter)),
            "engine/Cargo.toml depends on {adapter}: adapters' crates belong in daemon/"
        );
    }
}

#[test]
fn no_function_below_the_engine_takes_the_whole_engine() {
    let found = offending(
        "engine/src",
        |name| name == "engine/src/engine.rs" || name == "engine/src/lib.rs",
        &[": Engine", "&Engine", "Arc<Engine>", "engine::Engine"],
    );
    assert!(
        found.is_empty(),
        "only engine.rs composes the engine: {found:#?}"
    );
}

#[test]
fn every_task_is_spawned_through_a_tracker() {
    let mut found = offending("engine/src", |_| false, &["tokio::spawn(", "task::spawn("]);
    found.extend(offending(
        "daemon/src",
        |_| false,
        &["tokio::spawn(", "task::spawn("],
    ));
    assert!(found.is_empty(), "spawns outside a TaskTracker: {found:#?}");
}

#[test]
fn engine_errors_are_typed() {
    let found: Vec<String> = offending("engine/src", |_| false, &[", String>"])
        .into_iter()
        .filter(|hit| {
            // `line` is "path:number: word"; look at the source line itself.
            let mut parts = hit.splitn(3, ':');
            let (path, number) = (parts.next().unwrap(), parts.next().unwrap());
            let text = fs::read_to_string(root().join(path)).unwrap();
            let line = text
                .lines()
                .nth(number.parse::<usize>().unwrap() - 1)
                .unwrap();
            line.contains("Result<")
        })
        .collect();
    assert!(
        found.is_empty(),
        "Result<_, String> on engine paths: {found:#?}"
    );
}

#[test]
fn no_source_file_is_over_800_lines() {
    let mut long = Vec::new();
    for dir in ["protocol/src", "engine/src", "daemon/src", "bench/src"] {
        for path in rust_files(&root().join(dir)) {
            let name = relative(&path);
            if name.contains("/generated/") {
                continue;
            }
            let lines = fs::read_to_string(&path).unwrap().lines().count();
            if lines > 800 {
                long.push(format!("{name}: {lines} lines"));
            }
        }
    }
    assert!(long.is_empty(), "split these by job: {long:#?}");
}
