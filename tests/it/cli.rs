//! The offline commands: identity, configuration, bad input and exit codes.

use std::os::unix::fs::PermissionsExt;

use peerfold_protocol::DeviceId;
use serde_json::Value;

use crate::support::{Device, Running};

#[test]
fn init_prints_the_device_id_of_the_stored_certificate() {
    let device = Device::new();
    let out = device.ok(["init", "--name", "laptop", "--json"]);
    let printed: Value = serde_json::from_str(&out).unwrap();
    let id: DeviceId = printed["id"].as_str().unwrap().parse().unwrap();

    // The ID is the SHA-256 of the certificate on disk.
    let pem = std::fs::read(device.home().join("cert.pem")).unwrap();
    let der = rustls_pemfile_free_der(&pem);
    assert_eq!(DeviceId::from_certificate_der(&der), id);

    let key_mode = std::fs::metadata(device.home().join("key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600, "the private key must be private");

    let again: Value = serde_json::from_str(&device.ok(["id", "--json"])).unwrap();
    assert_eq!(again["id"], printed["id"]);
    assert_eq!(device.ok(["id"]).trim(), id.to_string());
    let config = std::fs::read_to_string(device.home().join("config.toml")).unwrap();
    assert!(config.contains("device_name = \"laptop\""), "{config}");
    assert!(device.home().join("index.db").exists());
}

/// The certificate's DER from its PEM, decoded by hand so the test does not share code with
/// the implementation.
fn rustls_pemfile_free_der(pem: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(pem).unwrap();
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    data_encoding_free_base64(&body)
}

fn data_encoding_free_base64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn init_stores_listen_and_api_addresses() {
    let device = Device::new();
    let refused = device.fails(1, ["init", "--listen", "tcp://0.0.0.0:22000"]);
    assert!(refused.contains("quic://"), "{refused}");
    device.ok([
        "init",
        "--listen",
        "quic://127.0.0.1:22555",
        "--listen",
        "quic://[::1]:22555",
        "--api",
        "127.0.0.1:18555",
    ]);
    assert_eq!(
        device.ok(["config", "get", "listenAddresses"]).trim(),
        "quic://127.0.0.1:22555,quic://[::1]:22555"
    );
    let config = std::fs::read_to_string(device.home().join("config.toml")).unwrap();
    assert!(config.contains("address = \"127.0.0.1:18555\""), "{config}");
}

#[test]
fn init_twice_keeps_the_identity() {
    let device = Device::init();
    let id_before = device.ok(["id"]);
    let stderr = device.fails(1, ["init"]);
    assert!(stderr.contains("already"), "{stderr}");
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "one-line message: {stderr}"
    );
    assert_eq!(device.ok(["id"]), id_before);
}

#[test]
fn commands_on_an_uninitialised_home_say_what_to_do() {
    let device = Device::new();
    let stderr = device.fails(1, ["id"]);
    assert!(stderr.contains("peerfold init"), "{stderr}");
    let stderr = device.fails(1, ["folder", "list"]);
    assert!(stderr.contains("peerfold init"), "{stderr}");
}

#[test]
fn usage_errors_exit_with_2() {
    let device = Device::init();
    device.fails(2, ["no-such-command"]);
    device.fails(2, ["folder", "add", "--path", "/tmp"]);
    device.fails(
        2,
        [
            "folder", "add", "--id", "x", "--path", "/tmp", "--type", "bogus",
        ],
    );
}

#[test]
fn qr_code_scans_back_to_the_device_id() {
    let device = Device::init();
    let id = device.ok(["id"]).trim().to_owned();
    let out = device.ok(["id", "--qr"]);
    assert!(
        out.trim_end().ends_with(&id),
        "the ID is printed under the code"
    );
    let decoded = decode_terminal_qr(&out);
    assert_eq!(decoded, id);
}

/// Turns the half-block drawing back into pixels (ink = light module, as drawn for dark
/// terminals) and decodes it with rqrr, an independent QR decoder.
fn decode_terminal_qr(text: &str) -> String {
    let rows: Vec<Vec<char>> = text
        .lines()
        .take_while(|l| l.chars().any(|c| "█▀▄".contains(c)))
        .map(|l| l.chars().collect())
        .collect();
    let width = rows[0].len();
    let mut modules = vec![vec![false; width]; rows.len() * 2];
    for (y, row) in rows.iter().enumerate() {
        for (x, c) in row.iter().enumerate() {
            let (top, bottom) = match c {
                '█' => (true, true),
                '▀' => (true, false),
                '▄' => (false, true),
                _ => (false, false),
            };
            modules[2 * y][x] = top;
            modules[2 * y + 1][x] = bottom;
        }
    }
    modules.truncate(width);
    const SCALE: usize = 4;
    let size = width * SCALE;
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(size, size, |x, y| {
        if modules[y / SCALE][x / SCALE] {
            255
        } else {
            0
        }
    });
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "exactly one QR code");
    grids[0].decode().expect("decodes").1
}

#[test]
fn folders_and_devices_are_configured_and_listed() {
    let device = Device::init();
    let root = device.add_folder("docs", "docs");
    assert!(
        root.join(".peerfold").is_dir(),
        "folder add creates the marker"
    );
    let other = DeviceId::from_bytes([7; 32]).to_string();
    let lower_undashed = other.replace('-', "").to_lowercase();
    device.ok([
        "device",
        "add",
        &lower_undashed,
        "--name",
        "desk",
        "--address",
        "quic://127.0.0.1:22100",
    ]);
    device.ok(["folder", "share", "docs", &other]);
    let folders: Value = serde_json::from_str(&device.ok(["folder", "list", "--json"])).unwrap();
    assert_eq!(folders[0]["id"], "docs");
    assert_eq!(folders[0]["type"], "sendreceive");
    assert_eq!(folders[0]["devices"][0], other.as_str());
    let devices: Value = serde_json::from_str(&device.ok(["device", "list", "--json"])).unwrap();
    assert_eq!(devices[0]["id"], other.as_str());
    assert_eq!(devices[0]["name"], "desk");
    assert_eq!(devices[0]["addresses"][0], "quic://127.0.0.1:22100");

    // Bad input gets one clear line and changes nothing.
    let config_before = std::fs::read(device.home().join("config.toml")).unwrap();
    let mut typo = other.clone().into_bytes();
    typo[3] = if typo[3] == b'A' { b'B' } else { b'A' };
    let stderr = device.fails(1, ["device", "add", std::str::from_utf8(&typo).unwrap()]);
    assert!(stderr.contains("typo"), "{stderr}");
    let stderr = device.fails(1, ["device", "add", &other]);
    assert!(stderr.contains("already"), "{stderr}");
    let own = device.ok(["id"]);
    let stderr = device.fails(1, ["device", "add", own.trim()]);
    assert!(stderr.contains("own"), "{stderr}");
    let stderr = device.fails(
        1,
        [
            "device",
            "add",
            &DeviceId::from_bytes([8; 32]).to_string(),
            "--address",
            "tcp://x",
        ],
    );
    assert!(stderr.contains("quic://"), "{stderr}");
    let stderr = device.fails(
        1,
        [
            "folder",
            "add",
            "--id",
            "docs",
            "--path",
            root.to_str().unwrap(),
        ],
    );
    assert!(stderr.contains("already exists"), "{stderr}");
    let missing = device.path("missing");
    let stderr = device.fails(
        1,
        [
            "folder",
            "add",
            "--id",
            "m",
            "--path",
            missing.to_str().unwrap(),
        ],
    );
    assert!(
        stderr.contains("missing") && stderr.contains("No such file"),
        "{stderr}"
    );
    let stderr = device.fails(1, ["folder", "share", "nope", &other]);
    assert!(stderr.contains("no folder"), "{stderr}");
    let stderr = device.fails(
        1,
        [
            "folder",
            "share",
            "docs",
            &DeviceId::from_bytes([9; 32]).to_string(),
        ],
    );
    assert!(stderr.contains("not configured"), "{stderr}");
    assert_eq!(
        std::fs::read(device.home().join("config.toml")).unwrap(),
        config_before
    );
}

#[test]
fn config_syntax_errors_name_the_line() {
    let device = Device::init();
    let path = device.home().join("config.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    let lines = text.lines().count();
    text.push_str("\n[[folder]\nid = 3\n");
    std::fs::write(&path, text).unwrap();
    let stderr = device.fails(1, ["folder", "list"]);
    assert!(stderr.contains(&format!("line {}", lines + 2)), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn corrupt_or_foreign_database_gets_advice_and_rebuilds() {
    let device = Device::init();
    let root = device.add_folder("docs", "docs");
    std::fs::write(root.join("a.txt"), b"hello").unwrap();
    device.scan("docs");
    let db = device.home().join("index.db");
    let _ = std::fs::remove_file(device.home().join("index.db-wal"));
    let _ = std::fs::remove_file(device.home().join("index.db-shm"));
    std::fs::write(&db, vec![0xA5; 16384]).unwrap();
    let stderr = device.fails(1, ["scan", "docs"]);
    assert!(stderr.contains("damaged"), "{stderr}");
    assert!(stderr.contains("peerfold scan"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    // Following the advice rebuilds the index from disk.
    std::fs::rename(&db, device.home().join("index.db.broken")).unwrap();
    device.scan("docs");
    let entries = device.ls("docs");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["name"], "a.txt");
}

/// `peerfold serve` runs itself again with glibc's malloc tuned for a daemon (few arenas,
/// freed memory given back), unless the user chose a setting of their own.
#[test]
fn the_daemon_runs_with_malloc_tuned_unless_the_user_set_it() {
    let environ = |running: &Running| -> Vec<String> {
        let raw = std::fs::read(format!("/proc/{}/environ", running.pid())).unwrap();
        raw.split(|&b| b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    };
    let device = Device::init();
    let running = device.serve();
    let tuned = environ(&running);
    for setting in [
        "MALLOC_ARENA_MAX=2",
        "MALLOC_TRIM_THRESHOLD_=65536",
        "MALLOC_MMAP_THRESHOLD_=4194304",
    ] {
        assert!(
            tuned.iter().any(|v| v == setting),
            "{setting} missing: {tuned:?}"
        );
    }
    running.stop();

    let own = device.serve_with(
        &["quic://127.0.0.1:0"],
        "127.0.0.1:0",
        &[("MALLOC_ARENA_MAX", "4")],
    );
    let kept = environ(&own);
    assert!(kept.iter().any(|v| v == "MALLOC_ARENA_MAX=4"), "{kept:?}");
    assert!(
        !kept
            .iter()
            .any(|v| v.starts_with("MALLOC_TRIM_THRESHOLD_=")),
        "the user's choice is left alone: {kept:?}"
    );
}
