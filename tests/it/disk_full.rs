//! A full disk on the receiving side: the local file is not replaced, the error is shown,
//! other files go on syncing, and the file arrives once space returns.
//!
//! Needs root to mount a small tmpfs as the folder root; CI runs as root.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{Device, noise, running_as_root, wait_until};
use crate::sync::{connect_devices, status_of};

/// A tmpfs mounted for the length of a test.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Self {
        assert!(
            running_as_root(),
            "this test mounts a tmpfs: run it as root (CI does)"
        );
        fs::create_dir_all(path).unwrap();
        let options = format!("size={size}");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "tmpfs"])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs on {}", path.display());
        Self(path.to_owned())
    }

    fn resize(&self, size: &str) {
        let options = format!("remount,size={size}");
        let status = Command::new("mount")
            .args(["-o", &options])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "remount {}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_keeps_the_local_file_reports_the_error_and_recovers() {
    let (a, b) = (Device::init(), Device::init());
    let root_a = a.add_folder("docs", "docs");
    let root_b = b.path("docs");
    let disk = Tmpfs::mount(&root_b, "8m");
    b.ok([
        "folder",
        "add",
        "--id",
        "docs",
        "--path",
        root_b.to_str().unwrap(),
    ]);
    let v1 = noise(1, 1 << 20);
    fs::write(root_a.join("big.bin"), &v1).unwrap();
    let running = connect_devices(&a, &b);
    wait_until("b has big.bin v1", 30, || {
        fs::read(root_b.join("big.bin")).is_ok_and(|d| d == v1)
    });

    // 16 MiB cannot fit in 8 MiB. With minDiskFree at 0 b tries, and the disk fills up
    // (the default, 1%, refuses to start the file instead: tests/it/settings.rs).
    let api_b = crate::api::Api::of(&b, &running[1]);
    api_b.ok_json(
        "PATCH",
        "/rest/config/folders/docs",
        serde_json::json!({ "minDiskFree": { "value": 0, "unit": "%" } }),
    );
    let v2 = noise(2, 16 << 20);
    fs::write(root_a.join("big.bin"), &v2).unwrap();
    wait_until("b reports the full disk for big.bin", 60, || {
        status_of(&b)["folders"][0]["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| {
                e["path"] == "big.bin"
                    && e["error"]
                        .as_str()
                        .is_some_and(|m| m.contains("No space left"))
            })
    });
    assert_eq!(
        fs::read(root_b.join("big.bin")).unwrap(),
        v1,
        "not replaced"
    );
    assert!(
        !root_b.join(".peerfold.big.bin.tmp").exists(),
        "the partial temp file is removed so its space serves other files"
    );
    let human = b.ok(["status"]);
    assert!(human.contains("cannot sync big.bin"), "{human}");

    // Other files keep syncing.
    fs::write(root_a.join("after.txt"), b"still syncing").unwrap();
    wait_until("b has after.txt", 30, || root_b.join("after.txt").exists());

    // Space returns: the file arrives and the error clears.
    disk.resize("64m");
    wait_until("b has big.bin v2", 60, || {
        fs::read(root_b.join("big.bin")).is_ok_and(|d| d == v2)
    });
    wait_until("the error clears", 30, || {
        status_of(&b)["folders"][0]["errors"]
            .as_array()
            .is_some_and(Vec::is_empty)
    });
    assert_eq!(
        fs::read(root_b.join(".peerfold/versions/big.bin")).unwrap(),
        v1,
        "the replaced version is kept"
    );
}
