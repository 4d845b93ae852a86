//! The folder's `maxConflicts`: how many conflict copies of one file stay beside it. The
//! oldest beyond the limit move to the versions directory (kept whatever the folder's
//! versioning says): a conflict copy is a user's edit, never deleted outright.

use std::fs;
use std::path::Path;

use super::versions::{self, KeepError};
use crate::model::planner::{CONFLICT_MARK, conflict_name_parts};

/// Moves the oldest conflict copies of `original` (a folder-relative name) to the versions
/// directory until at most `max` remain; returns how many moved. A negative `max` keeps
/// all. Copies sort by name, which orders them by the time stamp in it.
pub(crate) fn limit(
    root: &Path,
    original: &str,
    max: i64,
    max_age_days: u64,
) -> Result<usize, KeepError> {
    let Ok(max) = usize::try_from(max) else {
        return Ok(0);
    };
    let (dir, stem, ext) = conflict_name_parts(original);
    let prefix = format!("{stem}{CONFLICT_MARK}");
    let parent = match dir {
        Some(dir) => crate::model::names::join(root, dir)?,
        None => root.to_path_buf(),
    };
    let mut copies: Vec<String> = match fs::read_dir(&parent) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(&prefix) && n.ends_with(ext) && n.len() > prefix.len())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    copies.sort();
    let excess = copies.len().saturating_sub(max);
    let keep_all = versions::Settings::trashcan(max_age_days);
    for copy in &copies[..excess] {
        let name = match dir {
            Some(dir) => format!("{dir}/{copy}"),
            None => copy.clone(),
        };
        versions::keep(root, keep_all, &name, &parent.join(copy))?;
        tracing::info!(copy = %name, "moved an old conflict copy to versions (maxConflicts)");
    }
    Ok(excess)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_copies_beyond_the_limit_move_to_versions() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        fs::create_dir_all(root.join("d")).unwrap();
        let copies = [
            "d/a.sync-conflict-20240101-000000-AAAAAAA.txt",
            "d/a.sync-conflict-20250101-000000-AAAAAAA.txt",
            "d/a.sync-conflict-20260101-000000-AAAAAAA.txt",
        ];
        for name in copies
            .iter()
            .chain(&["d/a.txt", "d/ab.sync-conflict-20200101-000000-B.txt"])
        {
            fs::write(root.join(name), name).unwrap();
        }
        assert_eq!(limit(root, "d/a.txt", -1, 30).unwrap(), 0);
        assert_eq!(limit(root, "d/a.txt", 1, 30).unwrap(), 2);
        assert!(root.join(copies[2]).exists(), "the newest copy stays");
        for moved in &copies[..2] {
            assert!(!root.join(moved).exists());
            let kept = versions::dir(root).join(moved);
            assert_eq!(
                fs::read_to_string(kept).unwrap(),
                *moved,
                "kept in versions"
            );
        }
        // Other files, and another name's copies, are not touched.
        assert!(root.join("d/a.txt").exists());
        assert!(
            root.join("d/ab.sync-conflict-20200101-000000-B.txt")
                .exists()
        );
        assert_eq!(limit(root, "d/a.txt", 0, 30).unwrap(), 1);
        assert_eq!(limit(root, "missing/x", 0, 30).unwrap(), 0);
    }
}
