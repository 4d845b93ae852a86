//! Helpers: a device home in a temp directory and the `peerfold` binary run against it.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// One device: a temp directory holding its home (`home/`) and any folders the test makes.
pub(crate) struct Device {
    dir: tempfile::TempDir,
    /// Run every command as the unprivileged user `nobody` (tests that need permissions to
    /// bite even though CI runs as root).
    unprivileged: bool,
}

impl Device {
    /// A device with an empty home (not initialised).
    pub(crate) fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            unprivileged: false,
        }
    }

    /// Like [`Device::new`], but commands run as `nobody` when the tests run as root.
    pub(crate) fn unprivileged() -> Self {
        let device = Self::new();
        if running_as_root() {
            open_up(device.dir.path());
        }
        Self {
            unprivileged: running_as_root(),
            ..device
        }
    }

    /// An initialised device.
    pub(crate) fn init() -> Self {
        let device = Self::new();
        device.ok(["init"]);
        device
    }

    pub(crate) fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// A path inside the device's temp directory, for folders.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Creates a folder root `name` and adds it as folder `id`.
    pub(crate) fn add_folder(&self, id: &str, name: &str) -> PathBuf {
        let root = self.path(name);
        std::fs::create_dir_all(&root).unwrap();
        if self.unprivileged {
            open_up(&root);
        }
        self.ok([
            "folder",
            "add",
            "--id",
            id,
            "--path",
            root.to_str().unwrap(),
        ]);
        root
    }

    /// Runs `peerfold ARGS` with this device's home.
    pub(crate) fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let bin = env!("CARGO_BIN_EXE_peerfold");
        let mut command = if self.unprivileged {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin]);
            c
        } else {
            Command::new(bin)
        };
        command
            .args(args)
            .env("PEERFOLD_HOME", self.home())
            .env_remove("RUST_LOG")
            .output()
            .expect("running peerfold")
    }

    /// Runs a command that must succeed; returns its stdout.
    pub(crate) fn ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.run(&args);
        assert!(
            out.status.success(),
            "peerfold {args:?} failed ({:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    /// Runs a command that must fail with `code`; returns its stderr.
    pub(crate) fn fails<I, S>(&self, code: i32, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "peerfold {args:?}: stdout {} stderr {stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
        stderr
    }

    /// `peerfold ls FOLDER --json`, parsed.
    pub(crate) fn ls(&self, folder: &str) -> Vec<Value> {
        let text = self.ok(["ls", folder, "--json"]);
        match serde_json::from_str(&text).expect("ls --json prints JSON") {
            Value::Array(entries) => entries,
            other => panic!("ls --json printed {other}"),
        }
    }

    /// `peerfold scan FOLDER --json`, parsed (the one folder's report).
    pub(crate) fn scan(&self, folder: &str) -> Value {
        let text = self.ok(["scan", folder, "--json"]);
        let reports: Vec<Value> = serde_json::from_str(&text).expect("scan --json prints JSON");
        reports.into_iter().next().expect("one report")
    }
}

pub(crate) fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Lets `nobody` into a directory the tests made as root.
fn open_up(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
}

/// Deterministic pseudo-random bytes.
pub(crate) fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}
