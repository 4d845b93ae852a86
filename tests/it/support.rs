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

    /// Like [`Device::add_folder`], with a label.
    pub(crate) fn add_labeled_folder(&self, id: &str, name: &str, label: &str) -> PathBuf {
        let root = self.path(name);
        std::fs::create_dir_all(&root).unwrap();
        self.ok([
            "folder",
            "add",
            "--id",
            id,
            "--label",
            label,
            "--path",
            root.to_str().unwrap(),
        ]);
        root
    }

    /// The running daemon's `peerfold status --json`, once it answers, and the port its
    /// REST API is on now (a restart with `--api 127.0.0.1:0` picks a new one).
    pub(crate) fn running_status(&self) -> Option<(Value, u16)> {
        let out = self.run(["status", "--json"]);
        if !out.status.success() {
            return None;
        }
        let status: Value = serde_json::from_slice(&out.stdout).ok()?;
        let port = status["apiAddress"]
            .as_str()?
            .rsplit(':')
            .next()?
            .parse()
            .ok()?;
        Some((status, port))
    }

    /// Runs `peerfold ARGS` with this device's home. A home that `init` makes gets
    /// `localAnnounceEnabled=false`: daemons in these tests never multicast mDNS on the
    /// machine's LAN (tests/it/lan_discovery.rs turns it on inside network namespaces).
    pub(crate) fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<std::ffi::OsString> =
            args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.run_as_is(&args);
        if out.status.success() && args.first().is_some_and(|a| a == "init") {
            let off = self.run_as_is(["config", "set", "localAnnounceEnabled=false"]);
            assert!(
                off.status.success(),
                "turning mDNS off: {}",
                String::from_utf8_lossy(&off.stderr)
            );
        }
        out
    }

    fn run_as_is<I, S>(&self, args: I) -> Output
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

/// A `peerfold serve` process; stopped with SIGTERM when dropped.
pub(crate) struct Running {
    child: std::process::Child,
    /// The UDP port its QUIC listener got.
    pub(crate) port: u16,
    /// The TCP port its REST API got.
    pub(crate) api_port: u16,
}

impl Device {
    /// Starts `peerfold serve` on a free loopback port and waits until it listens.
    pub(crate) fn serve(&self) -> Running {
        self.serve_listening(&["quic://127.0.0.1:0"])
    }

    /// Like [`Device::serve`], listening on `listen` (QUIC addresses first, then relays).
    pub(crate) fn serve_listening(&self, listen: &[&str]) -> Running {
        self.serve_with_api(listen, "127.0.0.1:0")
    }

    /// Like [`Device::serve_listening`], with the REST API (and GUI) on `api`.
    pub(crate) fn serve_with_api(&self, listen: &[&str], api: &str) -> Running {
        self.serve_with(listen, api, &[])
    }

    /// Like [`Device::serve_with_api`], with extra environment variables.
    pub(crate) fn serve_with(&self, listen: &[&str], api: &str, env: &[(&str, &str)]) -> Running {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_peerfold"))
            .arg("serve")
            .args(listen.iter().flat_map(|address| ["--listen", address]))
            .args(["--api", api])
            .envs(env.iter().copied())
            .env("PEERFOLD_HOME", self.home())
            .env("RUST_LOG", "peerfold=debug")
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(self.path("serve.log")).unwrap())
            .spawn()
            .expect("starting peerfold serve");
        let stdout = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut next_line = || {
            lines
                .next()
                .unwrap_or_else(|| panic!("serve exited: {}", self.log()))
                .unwrap()
        };
        let port = loop {
            let line = next_line();
            if let Some(addrs) = line.strip_prefix("Listening on ") {
                let addr = addrs.split([',', ' ']).next().unwrap();
                break addr.rsplit(':').next().unwrap().parse().unwrap();
            }
        };
        let api_port = loop {
            let line = next_line();
            if let Some(rest) = line.strip_prefix("REST API on http://") {
                let addr = rest.split(' ').next().unwrap();
                break addr.rsplit(':').next().unwrap().parse().unwrap();
            }
        };
        Running {
            child,
            port,
            api_port,
        }
    }

    /// What the running daemon logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.path("serve.log")).unwrap_or_default()
    }

    pub(crate) fn id(&self) -> String {
        self.ok(["id"]).trim().to_owned()
    }
}

impl Running {
    /// The daemon's process ID.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A line of the daemon's `/proc/PID/status` (e.g. `VmRSS`, `VmHWM`), in KiB.
    pub(crate) fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status"))
    }

    /// Kills the daemon with SIGKILL: no cleanup of any kind.
    pub(crate) fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Stops the daemon with SIGTERM and waits for it.
    pub(crate) fn stop(mut self) -> std::process::ExitStatus {
        self.terminate()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        terminate(&mut self.child)
    }
}

/// Stops `child` with SIGTERM, and SIGKILL after 10 s; returns how it ended.
pub(crate) fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    for _ in 0..200 {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait().unwrap()
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// Polls `condition` until it holds; fails the test with `what` after `seconds`. This bounds
/// a wait for something that must happen, it measures nothing.
pub(crate) fn wait_until(what: &str, seconds: u64, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::time::Instant::now() < deadline {
        if condition() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("timed out waiting for: {what}");
}

/// A folder's contents as (relative path -> description), `.peerfold` excluded: kind,
/// permission bits, and content hash or symlink target.
pub(crate) fn tree(root: &Path) -> std::collections::BTreeMap<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if name == ".peerfold" {
                continue;
            }
            // A daemon may rename or delete it while we look (a temp file, say).
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let mode = meta.permissions().mode() & 0o777;
            let what = if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap_or_default();
                format!("symlink -> {}", target.display())
            } else if meta.is_dir() {
                stack.push(path.clone());
                format!("dir {mode:o}")
            } else {
                let data = std::fs::read(&path).unwrap_or_default();
                format!("file {mode:o} {}", blake3::hash(&data).to_hex())
            };
            out.insert(name, what);
        }
    }
    out
}

/// `stranger` learns `host`'s ID and port, shares "docs" with it and starts; `host` does not
/// know `stranger`, so the connection lands in its pending devices.
pub(crate) fn knock_on(stranger: &Device, host: &Device, host_port: u16) -> Running {
    let host_id = host.id();
    stranger.ok([
        "device",
        "add",
        &host_id,
        "--address",
        &format!("quic://127.0.0.1:{host_port}"),
    ]);
    stranger.ok(["folder", "share", "docs", &host_id]);
    stranger.serve()
}

/// Makes `a` and `b` known to each other and shares folder `id` (at `name` in each) between
/// them. `b_port`, when given, is where `a` dials `b`.
pub(crate) fn pair(a: &Device, b: &Device, b_port: Option<u16>) {
    let (ia, ib) = (a.id(), b.id());
    match b_port {
        Some(port) => a.ok([
            "device",
            "add",
            &ib,
            "--address",
            &format!("quic://127.0.0.1:{port}"),
        ]),
        None => a.ok(["device", "add", &ib]),
    };
    b.ok(["device", "add", &ia]);
}

/// Waits until the two folders hold the same tree; on timeout the failure shows both trees
/// and the daemons' logs.
pub(crate) fn wait_for_same_tree(
    what: &str,
    seconds: u64,
    a: (&Path, &Device),
    b: (&Path, &Device),
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::time::Instant::now() < deadline {
        if tree(a.0) == tree(b.0) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!(
        "timed out waiting for: {what}\n--- a: {:#?}\n--- b: {:#?}\n--- a's log:\n{}\n--- b's log:\n{}",
        tree(a.0),
        tree(b.0),
        a.1.log(),
        b.1.log()
    );
}
