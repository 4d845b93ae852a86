//! A name that changes kind on one device (a file becomes a directory or a symlink, a
//! directory becomes a file or a symlink) keeps every replaced file in the other device's
//! versions directory: two real daemons.

use std::fs;
use std::os::unix::fs::symlink;

use crate::api::Api;
use crate::support::{Device, wait_for_same_tree, wait_until};
use crate::sync::connect_devices;

fn is_symlink(path: &std::path::Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

#[test]
fn a_name_that_changes_kind_keeps_the_replaced_files_in_versions() {
    let (a, b) = (Device::init(), Device::init());
    let root_a = a.add_folder("docs", "docs");
    let root_b = b.add_folder("docs", "docs");
    fs::write(root_a.join("x"), b"x was a file").unwrap();
    fs::write(root_a.join("s"), b"s was a file").unwrap();
    fs::create_dir(root_a.join("d")).unwrap();
    fs::write(root_a.join("d/inside"), b"in d").unwrap();
    fs::create_dir_all(root_a.join("e/sub")).unwrap();
    fs::write(root_a.join("e/sub/deep"), b"deep in e").unwrap();
    let [running_a, _running_b] = connect_devices(&a, &b);
    wait_for_same_tree("b has a's tree", 60, (&root_a, &a), (&root_b, &b));

    // On b: x becomes a directory, s a symlink; d (holding a file) a file, e (holding a
    // directory holding a file) a symlink.
    fs::remove_file(root_b.join("x")).unwrap();
    fs::create_dir(root_b.join("x")).unwrap();
    fs::write(root_b.join("x/new"), b"new in x").unwrap();
    fs::remove_file(root_b.join("s")).unwrap();
    symlink("x/new", root_b.join("s")).unwrap();
    fs::remove_dir_all(root_b.join("d")).unwrap();
    fs::write(root_b.join("d"), b"d is a file now").unwrap();
    fs::remove_dir_all(root_b.join("e")).unwrap();
    symlink("d", root_b.join("e")).unwrap();

    let versions = root_a.join(".peerfold/versions");
    wait_until("x is a directory and s a symlink on a", 60, || {
        root_a.join("x/new").is_file() && is_symlink(&root_a.join("s"))
    });
    assert_eq!(
        fs::read(versions.join("x")).ok().as_deref(),
        Some(&b"x was a file"[..]),
        "the file a directory replaced is kept"
    );
    assert_eq!(
        fs::read(versions.join("s")).ok().as_deref(),
        Some(&b"s was a file"[..]),
        "the file a symlink replaced is kept"
    );
    // A directory is replaced only once its contents are gone (each kept as a deleted
    // file), never removed with them.
    wait_for_same_tree("a has b's replacements", 120, (&root_a, &a), (&root_b, &b));
    assert_eq!(fs::read(root_a.join("d")).unwrap(), b"d is a file now");
    assert!(is_symlink(&root_a.join("e")));
    assert_eq!(fs::read(versions.join("d/inside")).unwrap(), b"in d");
    assert_eq!(fs::read(versions.join("e/sub/deep")).unwrap(), b"deep in e");

    // x goes back to being a file on b. Its file x/new is kept as versions/x/new, where the
    // file kept earlier as versions/x is in the way: that one moves to x~TIMESTAMP, and
    // both stay.
    fs::remove_dir_all(root_b.join("x")).unwrap();
    fs::write(root_b.join("x"), b"x is a file again").unwrap();
    wait_for_same_tree("x is a file again on a", 120, (&root_a, &a), (&root_b, &b));
    assert_eq!(fs::read(root_a.join("x")).unwrap(), b"x is a file again");
    assert_eq!(fs::read(versions.join("x/new")).unwrap(), b"new in x");
    let earlier: Vec<_> = fs::read_dir(&versions)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("x~"))
        .collect();
    assert_eq!(earlier.len(), 1, "the earlier kept x moved aside");
    assert_eq!(fs::read(earlier[0].path()).unwrap(), b"x was a file");
    let listed = Api::of(&a, &running_a).get("/rest/folder/versions?folder=docs");
    let names: Vec<&String> = listed.as_object().unwrap().keys().collect();
    // The one moved aside is listed as a version of x, from when it was moved.
    assert!(
        names.iter().any(|n| *n == "x/new") && names.iter().any(|n| *n == "x"),
        "{listed}"
    );
}
