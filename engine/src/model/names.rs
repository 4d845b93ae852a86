//! Validation of names received from peers (DESIGN 4.6): a name must stay inside the folder,
//! and be in the form the scanner indexes (NFC), so what is written is what a scan finds.

use std::path::{Component, Path, PathBuf};

use unicode_normalization::is_nfc;

/// Why a received name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty, or longer than any file system takes.
    #[error("name is empty or longer than 4096 bytes")]
    Length,
    /// Starts with `/` or a drive letter.
    #[error("name {0:?} is absolute")]
    Absolute(String),
    /// Has an empty, `.` or `..` component.
    #[error("name {0:?} has an empty, '.' or '..' component")]
    Component(String),
    /// Holds a NUL or a backslash (a Windows separator).
    #[error("name {0:?} holds a NUL or a backslash")]
    Character(String),
    /// Peerfold's own metadata or temp files.
    #[error("name {0:?} is reserved for peerfold")]
    Reserved(String),
    /// Not in Unicode NFC: the scanner skips such names, so a file written under one would
    /// stay on disk while the index calls it deleted.
    #[error("name {0:?} is not in Unicode normalization form C")]
    NotNfc(String),
}

/// Checks that `name` is a relative, `/`-separated path in NFC that cannot leave the folder
/// root.
pub fn validate(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > 4096 {
        return Err(NameError::Length);
    }
    if name.starts_with('/') || (name.len() >= 2 && name.as_bytes()[1] == b':') {
        return Err(NameError::Absolute(name.to_owned()));
    }
    if name.contains('\0') || name.contains('\\') {
        return Err(NameError::Character(name.to_owned()));
    }
    let mut first = true;
    for part in name.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(NameError::Component(name.to_owned()));
        }
        if (first && (part == ".peerfold" || part == ".peerfoldignore"))
            || (part.starts_with(".peerfold.") && part.ends_with(".tmp"))
        {
            return Err(NameError::Reserved(name.to_owned()));
        }
        first = false;
    }
    if !is_nfc(name) {
        return Err(NameError::NotNfc(name.to_owned()));
    }
    Ok(())
}

/// `root/name` for a validated name. The result has only normal components below `root`.
pub fn join(root: &Path, name: &str) -> Result<PathBuf, NameError> {
    validate(name)?;
    let relative = Path::new(name);
    if !relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(NameError::Component(name.to_owned()));
    }
    Ok(root.join(relative))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hostile_names_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "x\0y",
            "a\\..\\b",
            "C:/x",
            ".peerfold/x",
            "dir/.peerfold.f.tmp",
            "..",
            "cafe\u{301}.txt",
            "re\u{301}sume\u{301}/cv.txt",
            "dir/A\u{30a}",
        ] {
            assert!(validate(bad).is_err(), "{bad:?} was accepted");
        }
        for good in [
            "a",
            "a/b/c.txt",
            ".hidden",
            "dir/.peerfold",
            "x..y",
            "a b/c",
            "caf\u{e9}.txt",
            "\u{c5}ngstr\u{f6}m/\u{65e5}\u{672c}",
        ] {
            assert!(validate(good).is_ok(), "{good:?} was refused");
        }
    }

    proptest! {
        #[test]
        fn accepted_names_stay_inside_the_root(name in "[a-z./\\\\\0]{0,12}") {
            if let Ok(path) = join(Path::new("/root"), &name) {
                prop_assert!(path.starts_with("/root/"));
                prop_assert!(!path.components().any(|c| matches!(c, Component::ParentDir)));
            }
        }
    }
}
