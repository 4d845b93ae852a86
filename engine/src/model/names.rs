//! Validation of names received from peers (DESIGN 4.6): a name must stay inside the folder,
//! and be in the form the scanner indexes (NFC), so what is written is what a scan finds.

use std::path::{Component, Path, PathBuf};

use unicode_normalization::is_nfc;

/// Bytes of a peer's name that an error about it carries (a name may have 4,096 bytes, and
/// one a peer sends any number): errors go to logs, lists and API answers.
pub const SHOWN_NAME_BYTES: usize = 200;

/// Why a received name was refused. Each variant holds the name cut to
/// [`SHOWN_NAME_BYTES`] ([`shown`]); the messages quote it with control characters escaped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty, or longer than any file system takes.
    #[error("name is empty or longer than 4096 bytes")]
    Length(String),
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

impl NameError {
    /// The refused name, cut to [`SHOWN_NAME_BYTES`].
    pub fn name(&self) -> &str {
        match self {
            Self::Length(name)
            | Self::Absolute(name)
            | Self::Component(name)
            | Self::Character(name)
            | Self::Reserved(name)
            | Self::NotNfc(name) => name,
        }
    }

    /// What is wrong, without the name (for logs about peer input).
    pub fn what(&self) -> &'static str {
        match self {
            Self::Length(_) => "the name is empty or longer than 4096 bytes",
            Self::Absolute(_) => "the name is absolute",
            Self::Component(_) => "the name has an empty, '.' or '..' component",
            Self::Character(_) => "the name holds a NUL or a backslash",
            Self::Reserved(_) => "the name is reserved for peerfold",
            Self::NotNfc(_) => "the name is not in Unicode normalization form C",
        }
    }
}

/// At most [`SHOWN_NAME_BYTES`] of `name`, cut at a character boundary and marked with `…`
/// when cut.
pub fn shown(name: &str) -> String {
    if name.len() <= SHOWN_NAME_BYTES {
        return name.to_owned();
    }
    let mut end = SHOWN_NAME_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &name[..end])
}

/// Checks that `name` is a relative, `/`-separated path in NFC that cannot leave the folder
/// root.
pub fn validate(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > 4096 {
        return Err(NameError::Length(shown(name)));
    }
    if name.starts_with('/') || (name.len() >= 2 && name.as_bytes()[1] == b':') {
        return Err(NameError::Absolute(shown(name)));
    }
    if name.contains('\0') || name.contains('\\') {
        return Err(NameError::Character(shown(name)));
    }
    let mut first = true;
    for part in name.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(NameError::Component(shown(name)));
        }
        if (first && (part == ".peerfold" || part == ".peerfoldignore"))
            || (part.starts_with(".peerfold.") && part.ends_with(".tmp"))
        {
            return Err(NameError::Reserved(shown(name)));
        }
        first = false;
    }
    if !is_nfc(name) {
        return Err(NameError::NotNfc(shown(name)));
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
        return Err(NameError::Component(shown(name)));
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

    #[test]
    fn errors_carry_a_bounded_name_with_control_characters_escaped() {
        let long = format!("/{}\u{1b}[31m", "x".repeat(10_000));
        let e = validate(&long).unwrap_err();
        assert!(e.name().len() <= SHOWN_NAME_BYTES + '…'.len_utf8());
        assert!(e.to_string().len() < 300, "{}", e.to_string().len());
        let e = validate("../\u{1b}[2J").unwrap_err();
        assert!(!e.to_string().contains('\u{1b}'), "{e}");
        assert!(e.to_string().contains("\\u{1b}"), "{e}");
        assert_eq!(e.what(), "the name has an empty, '.' or '..' component");
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
