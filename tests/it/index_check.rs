//! A damaged index is refused at start with the advice that fixes it, like a truncated one.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Device, noise};

/// SQLite's page size for peerfold's index (the default).
const PAGE: u64 = 4096;

#[test]
fn serve_refuses_an_index_with_garbage_pages_and_says_how_to_rebuild_it() {
    let device = Device::init();
    let root = device.add_folder("docs", "docs");
    for i in 0..2000 {
        fs::write(root.join(format!("file-{i:04}.txt")), noise(i, 64)).unwrap();
    }
    device.scan("docs");
    let home = device.home();
    let db = home.join("index.db");
    // `peerfold scan` closed the database: everything is in the main file.
    assert!(fs::metadata(home.join("index.db-wal")).map_or(true, |m| m.len() == 0));
    let pages = fs::metadata(&db).unwrap().len() / PAGE;
    assert!(pages > 40, "the index has {pages} pages");
    // Garbage over the middle of the file: the header page (application ID, schema
    // version) and the schema page stay intact, so only a check of the pages finds it.
    let mut file = fs::OpenOptions::new().write(true).open(&db).unwrap();
    file.seek(SeekFrom::Start(pages / 2 * PAGE)).unwrap();
    file.write_all(&vec![0xA5; (8 * PAGE) as usize]).unwrap();
    file.sync_all().unwrap();
    drop(file);

    let mut serve = Command::new(env!("CARGO_BIN_EXE_peerfold"))
        .args([
            "serve",
            "--listen",
            "quic://127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
        ])
        .env("PEERFOLD_HOME", &home)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = serve.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = serve.kill();
            let out = serve.wait_with_output().unwrap();
            panic!(
                "serve kept running on a damaged index: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = serve.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("damaged"), "{stderr}");
    assert!(stderr.contains("peerfold scan"), "{stderr}");
    assert!(stderr.contains(&format!("mv {}", db.display())), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    // The advice works: moved away, the index is rebuilt from the disk.
    fs::rename(&db, home.join("index.db.broken")).unwrap();
    let _ = fs::remove_file(home.join("index.db-wal"));
    let _ = fs::remove_file(home.join("index.db-shm"));
    device.scan("docs");
    assert_eq!(device.ls("docs").len(), 2000);
}
