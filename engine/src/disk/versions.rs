//! Kept versions: files sync replaces or deletes go to `.peerfold/versions/`, when the
//! folder keeps versions: trash-can style as `NAME` (the newest replaced version of each
//! name), cleaned out after the folder's maximum age; or, for simple and staggered
//! versioning, as `STEM~YYYYMMDD-HHMMSS.EXT`, several per name, thinned out as
//! `versioning` says. Whatever replaces a file (new content, a directory, a symlink, a
//! deletion), the file is kept.
//!
//! A name that changed kind can find an older kept entry of the other kind in its way (a
//! kept file `x` where `x/y` is to be kept, or kept files under `x/` where the file `x`
//! goes): that older entry moves aside to `x~YYYYMMDD-HHMMSS` (UTC, Syncthing's version
//! tag), so no kept version is lost to a change of kind.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::versioning;
use crate::config::{FolderConfig, VersioningType};
use crate::disk::assemble;
use crate::disk::scanner::MARKER_DIR;
use crate::model::names::{self, NameError};

/// Where kept versions live, inside the folder's marker directory.
pub const VERSIONS_DIR: &str = "versions";

/// A folder's versioning settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Settings {
    /// Keep replaced and deleted files.
    pub(crate) keep: bool,
    /// Days a kept version stays (0: forever).
    pub(crate) max_age_days: u64,
    /// Trash can, simple or staggered.
    pub(crate) kind: VersioningType,
    /// Versions per name simple versioning keeps.
    pub(crate) versions: u32,
}

impl Settings {
    pub(crate) fn of(config: &FolderConfig) -> Self {
        Self {
            keep: config.versioning,
            max_age_days: config.versions_max_age_days,
            kind: config.versioning_type,
            versions: config.versions_keep,
        }
    }

    /// Trash-can versioning kept for `max_age_days` (what conflict copies beyond
    /// `maxConflicts` go to, whatever the folder's own versioning).
    pub(crate) fn trashcan(max_age_days: u64) -> Self {
        Self {
            keep: true,
            max_age_days,
            kind: VersioningType::Trashcan,
            versions: 1,
        }
    }
}

/// Why a version could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum KeepError {
    /// Moving the file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The name cannot be a path under the versions directory.
    #[error(transparent)]
    Name(#[from] NameError),
}

/// The versions directory of the folder at `root`.
pub(crate) fn dir(root: &Path) -> PathBuf {
    root.join(MARKER_DIR).join(VERSIONS_DIR)
}

/// Moves the file at `path` (the folder's `name`) to the versions directory when the
/// folder keeps versions. Directories and symlinks are not kept.
pub(crate) fn keep(
    root: &Path,
    settings: Settings,
    name: &str,
    path: &Path,
) -> Result<(), KeepError> {
    if !settings.keep || !fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
        return Ok(());
    }
    if settings.kind != VersioningType::Trashcan {
        return keep_tagged(root, settings, name, path);
    }
    let versions = dir(root);
    let kept = names::join(&versions, name)?;
    make_room(&versions, name)?;
    if let Some(parent) = kept.parent() {
        fs::create_dir_all(parent)?;
    }
    discard_large(root, &kept)?;
    fs::rename(path, &kept)?;
    tracing::debug!(%name, "kept the replaced version");
    Ok(())
}

/// A kept version at least this large, replaced by a newer one, is freed on a thread of
/// its own: renaming over it freed its extents inside `rename`, 0.8 s for 1 GiB on ext4,
/// while the download that replaced it waited to be installed.
const FREE_APART_FROM: u64 = 64 << 20;

/// Where large replaced versions wait to be freed; what a crash left there goes at the
/// next [`clean`].
fn discard_dir(root: &Path) -> PathBuf {
    root.join(MARKER_DIR).join("discard")
}

/// If a large file is kept at `kept`, moves it to the discard directory and frees it on a
/// thread of its own (trash-can versioning keeps one version per name: this one goes
/// either way).
fn discard_large(root: &Path, kept: &Path) -> std::io::Result<()> {
    let large = fs::symlink_metadata(kept).is_ok_and(|m| m.is_file() && m.len() >= FREE_APART_FROM);
    if !large {
        return Ok(());
    }
    let discard = discard_dir(root);
    fs::create_dir_all(&discard)?;
    let doomed = tagged(&discard.join("version"));
    fs::rename(kept, &doomed)?;
    let free = {
        let doomed = doomed.clone();
        move || {
            if let Err(e) = remove_file_if_there(&doomed) {
                tracing::warn!(path = %doomed.display(), error = %e, "freeing a replaced version");
            }
        }
    };
    // No thread to be had (the process is at its limit): freed here, as before.
    if std::thread::Builder::new()
        .name("free-version".into())
        .spawn(free)
        .is_err()
    {
        remove_file_if_there(&doomed)?;
    }
    Ok(())
}

fn remove_file_if_there(path: &Path) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Keeps the file as `STEM~NOW.EXT`, then lets go of that name's versions the folder's
/// versioning no longer wants.
fn keep_tagged(root: &Path, settings: Settings, name: &str, path: &Path) -> Result<(), KeepError> {
    let versions = dir(root);
    // A version's tag is later than every kept one of the name (two within a second: the
    // later takes the next second), so tag order is the order they were kept in.
    let mut now = jiff::Timestamp::now();
    let probe = names::join(&versions, &versioning::tagged_name(name, now))?;
    if let Some(latest) = probe.parent().and_then(|at| latest_tag(at, name))
        && latest >= now
    {
        now = latest + jiff::SignedDuration::from_secs(1);
    }
    let mut kept = names::join(&versions, &versioning::tagged_name(name, now))?;
    while fs::symlink_metadata(&kept).is_ok() {
        now += jiff::SignedDuration::from_secs(1);
        kept = names::join(&versions, &versioning::tagged_name(name, now))?;
    }
    let tagged = versioning::tagged_name(name, now);
    make_room(&versions, &tagged)?;
    if let Some(parent) = kept.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::rename(path, &kept)?;
    tracing::debug!(%name, "kept a tagged version");
    if let Some(parent) = kept.parent() {
        thin_out(parent, settings, Some(name))?;
    }
    Ok(())
}

/// The latest tag among the kept versions of `name` in the directory `at`.
fn latest_tag(at: &Path, name: &str) -> Option<jiff::Timestamp> {
    let base = name.rsplit('/').next().unwrap_or(name);
    fs::read_dir(at)
        .ok()?
        .flatten()
        .filter_map(|e| versioning::parse_tagged(&e.file_name().to_string_lossy()))
        .filter(|(original, _)| original == base)
        .map(|(_, time)| time)
        .max()
}

/// Removes the tagged versions in the directory `at` that the folder's versioning lets go
/// (of one name, or of every name); returns how many.
fn thin_out(at: &Path, settings: Settings, only: Option<&str>) -> std::io::Result<u64> {
    let mut by_name: std::collections::BTreeMap<String, Vec<(jiff::Timestamp, PathBuf)>> =
        std::collections::BTreeMap::new();
    let Ok(entries) = fs::read_dir(at) else {
        return Ok(0);
    };
    let only_base = only.map(|n| n.rsplit('/').next().unwrap_or(n));
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some((original, time)) = versioning::parse_tagged(&file_name) else {
            continue;
        };
        if only_base.is_some_and(|b| b != original) || !entry.path().is_file() {
            continue;
        }
        by_name
            .entry(original)
            .or_default()
            .push((time, entry.path()));
    }
    let now = jiff::Timestamp::now();
    let mut removed = 0;
    for versions in by_name.values_mut() {
        versions.sort();
        let times: Vec<jiff::Timestamp> = versions.iter().map(|(t, _)| *t).collect();
        let excess = match settings.kind {
            VersioningType::Simple => {
                let mut excess = versioning::simple_excess(&times, settings.versions as usize);
                if settings.max_age_days > 0 {
                    let cutoff = now.as_second() - (settings.max_age_days * 86_400) as i64;
                    excess.extend((0..times.len()).filter(|&i| times[i].as_second() < cutoff));
                }
                excess
            }
            VersioningType::Staggered => {
                versioning::staggered_excess(&times, now, (settings.max_age_days * 86_400) as i64)
            }
            VersioningType::Trashcan => Vec::new(),
        };
        let mut excess = excess;
        excess.sort_unstable();
        excess.dedup();
        for i in excess {
            fs::remove_file(&versions[i].1)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Moves aside older kept entries that stand where `versions/name` needs a directory (a
/// kept file among its parents) or a file (a directory of kept files).
fn make_room(versions: &Path, name: &str) -> std::io::Result<()> {
    let mut at = versions.to_path_buf();
    let parts: Vec<&str> = name.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        let is_last = i + 1 == parts.len();
        match fs::symlink_metadata(&at) {
            Ok(meta) if meta.is_dir() == is_last => {
                let aside = tagged(&at);
                fs::rename(&at, &aside)?;
                tracing::debug!(%name, "moved an earlier kept version of another kind aside");
                return Ok(());
            }
            Ok(_) => {}
            // Nothing further down can be in the way.
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

/// A free name beside `path`: `NAME~YYYYMMDD-HHMMSS`, with `-2`, `-3`... if that is taken.
fn tagged(path: &Path) -> PathBuf {
    let stamp = jiff::Timestamp::now().strftime("%Y%m%d-%H%M%S").to_string();
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut candidate = path.with_file_name(format!("{base}~{stamp}"));
    let mut n = 2;
    while fs::symlink_metadata(&candidate).is_ok() {
        candidate = path.with_file_name(format!("{base}~{stamp}-{n}"));
        n += 1;
    }
    candidate
}

/// Moves a local file out of the way (into the versions directory when the folder keeps
/// versions), or removes a symlink or an empty directory. A directory that holds anything
/// fails with `DirectoryNotEmpty`: it is never removed with its contents.
pub(crate) fn put_aside(
    root: &Path,
    settings: Settings,
    name: &str,
    path: &Path,
) -> Result<(), KeepError> {
    keep(root, settings, name, path)?;
    Ok(remove(path)?)
}

/// Removes a file, symlink or empty directory (peerfold's temp files in it go too); a
/// missing one is fine.
pub(crate) fn remove(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => assemble::remove_empty_dir(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes kept versions older than the folder's maximum age (simple and staggered: the
/// ones their rules let go); returns how many.
pub(crate) fn clean(root: &Path, settings: &Settings) -> std::io::Result<u64> {
    // Replaced versions a crash left before they were freed.
    if let Ok(entries) = fs::read_dir(discard_dir(root)) {
        for entry in entries.flatten() {
            remove_file_if_there(&entry.path())?;
        }
    }
    if settings.kind != VersioningType::Trashcan {
        let mut removed = 0;
        let mut stack = vec![dir(root)];
        while let Some(at) = stack.pop() {
            removed += thin_out(&at, *settings, None)?;
            if let Ok(entries) = fs::read_dir(&at) {
                stack.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
        return Ok(removed);
    }
    if settings.max_age_days == 0 {
        return Ok(0);
    }
    let cutoff = SystemTime::now() - Duration::from_secs(settings.max_age_days * 86_400);
    let mut removed = 0;
    let mut stack = vec![dir(root)];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.modified().is_ok_and(|m| m < cutoff) {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// A kept version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptVersion {
    /// Where it is kept, relative to the versions directory.
    pub stored: String,
    /// The name it had in the folder.
    pub name: String,
    /// When it was kept, from its tag (tagged versions only).
    pub kept_at: Option<jiff::Timestamp>,
    /// Its size.
    pub size: u64,
    /// When it was last modified (which, after the move, is when it was kept).
    pub modified: Option<jiff::Timestamp>,
}

/// Every kept version of the folder at `root`, by name.
pub(crate) fn list(root: &Path) -> Vec<KeptVersion> {
    let root = dir(root);
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            let path = entry.path();
            if meta.is_dir() {
                stack.push(path);
            } else if let Ok(relative) = path.strip_prefix(&root) {
                let stored = relative.to_string_lossy().into_owned();
                let (name, kept_at) = match versioning::parse_tagged(&stored) {
                    Some((name, at)) => (name, Some(at)),
                    None => (stored.clone(), None),
                };
                out.push(KeptVersion {
                    stored,
                    name,
                    kept_at,
                    size: meta.len(),
                    modified: meta
                        .modified()
                        .ok()
                        .and_then(|m| jiff::Timestamp::try_from(m).ok()),
                });
            }
        }
    }
    out.sort_by(|a, b| (&a.name, a.kept_at).cmp(&(&b.name, b.kept_at)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaced_files_are_kept_by_name_and_listed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join(MARKER_DIR)).unwrap();
        fs::create_dir(root.join("a")).unwrap();
        fs::write(root.join("a/f.txt"), b"old").unwrap();
        let on = Settings::trashcan(0);
        put_aside(root, on, "a/f.txt", &root.join("a/f.txt")).unwrap();
        assert!(!root.join("a/f.txt").exists());
        let kept = list(root);
        assert_eq!(kept.len(), 1);
        assert_eq!((kept[0].name.as_str(), kept[0].size), ("a/f.txt", 3));
        // Without versioning the file simply goes.
        fs::write(root.join("g"), b"x").unwrap();
        let off = Settings { keep: false, ..on };
        put_aside(root, off, "g", &root.join("g")).unwrap();
        assert!(!root.join("g").exists());
        assert_eq!(list(root).len(), 1);
        assert_eq!(clean(root, &on).unwrap(), 0);
    }

    #[test]
    fn an_earlier_kept_version_of_another_kind_moves_aside() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path();
        fs::create_dir_all(root.join(MARKER_DIR)).unwrap();
        let on = Settings::trashcan(0);
        // x was a file (kept), then a directory whose file x/y is kept now.
        fs::write(root.join("x"), b"file x").unwrap();
        keep(root, on, "x", &root.join("x")).unwrap();
        fs::create_dir(root.join("x")).unwrap();
        fs::write(root.join("x/y"), b"x/y").unwrap();
        keep(root, on, "x/y", &root.join("x/y")).unwrap();
        // And x is a file again, replaced in turn: kept where the directory of x/y was.
        fs::remove_dir(root.join("x")).unwrap();
        fs::write(root.join("x"), b"file x again").unwrap();
        keep(root, on, "x", &root.join("x")).unwrap();
        let kept = list(root);
        let names: Vec<&str> = kept.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(fs::read(dir(root).join("x")).unwrap(), b"file x again");
        let moved: Vec<&str> = kept
            .iter()
            .map(|k| k.stored.as_str())
            .filter(|n| n.starts_with("x~"))
            .collect();
        assert_eq!(moved.len(), 2, "{names:?}");
        let contents: Vec<Vec<u8>> = moved
            .iter()
            .map(|n| fs::read(dir(root).join(n)).unwrap())
            .collect();
        assert!(contents.contains(&b"file x".to_vec()), "{names:?}");
        assert!(contents.contains(&b"x/y".to_vec()), "{names:?}");
    }

    #[test]
    fn simple_versioning_keeps_the_newest_tagged_versions() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path();
        fs::create_dir_all(root.join(MARKER_DIR)).unwrap();
        fs::create_dir(root.join("d")).unwrap();
        let simple = Settings {
            keep: true,
            max_age_days: 0,
            kind: VersioningType::Simple,
            versions: 2,
        };
        for round in 0..4 {
            fs::write(root.join("d/notes.txt"), format!("version {round}")).unwrap();
            keep(root, simple, "d/notes.txt", &root.join("d/notes.txt")).unwrap();
        }
        let kept = list(root);
        assert_eq!(kept.len(), 2, "{kept:?}");
        for (v, round) in kept.iter().zip([2, 3]) {
            assert_eq!(v.name, "d/notes.txt");
            assert!(
                v.stored.starts_with("d/notes~") && v.stored.ends_with(".txt"),
                "{v:?}"
            );
            assert!(v.kept_at.is_some());
            let text = fs::read_to_string(dir(root).join(&v.stored)).unwrap();
            assert_eq!(
                text,
                format!("version {round}"),
                "the newest two, oldest first"
            );
        }
        assert_eq!(clean(root, &simple).unwrap(), 0);
        // Staggered: versions a second apart in the first hour keep one per 30 s.
        let staggered = Settings {
            kind: VersioningType::Staggered,
            max_age_days: 365,
            ..simple
        };
        fs::write(root.join("d/notes.txt"), b"staggered").unwrap();
        keep(root, staggered, "d/notes.txt", &root.join("d/notes.txt")).unwrap();
        assert_eq!(list(root).len(), 1, "{:?}", list(root));
    }

    #[test]
    fn a_large_version_replaced_in_the_trash_can_is_freed_apart() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path();
        fs::create_dir_all(root.join(MARKER_DIR)).unwrap();
        let on = Settings::trashcan(0);
        let (big, path) = (FREE_APART_FROM, root.join("big"));
        // Sparse: as large as it gets freed apart, without writing it.
        let write_big = |mark: &[u8]| {
            let file = fs::File::create(&path).unwrap();
            file.set_len(big).unwrap();
            std::os::unix::fs::FileExt::write_all_at(&file, mark, 0).unwrap();
        };
        write_big(b"first");
        keep(root, on, "big", &path).unwrap();
        write_big(b"second");
        keep(root, on, "big", &path).unwrap();
        // The newer version is kept; the older one leaves the discard directory once freed.
        let kept = fs::read(dir(root).join("big")).unwrap();
        assert_eq!((&kept[..6], kept.len() as u64), (&b"second"[..], big));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while fs::read_dir(discard_dir(root)).unwrap().next().is_some() {
            assert!(std::time::Instant::now() < deadline, "never freed");
            std::thread::sleep(Duration::from_millis(10));
        }
        // A small one is replaced in place: nothing goes to the discard directory.
        fs::write(root.join("small"), b"one").unwrap();
        keep(root, on, "small", &root.join("small")).unwrap();
        fs::write(root.join("small"), b"two").unwrap();
        keep(root, on, "small", &root.join("small")).unwrap();
        assert_eq!(fs::read(dir(root).join("small")).unwrap(), b"two");
        assert_eq!(fs::read_dir(discard_dir(root)).unwrap().count(), 0);
        // What a crash left there goes at the next clean; kept versions stay.
        fs::write(discard_dir(root).join("version~left"), b"left").unwrap();
        assert_eq!(clean(root, &on).unwrap(), 0);
        assert_eq!(fs::read_dir(discard_dir(root)).unwrap().count(), 0);
        assert_eq!(list(root).len(), 2);
    }

    #[test]
    fn a_directory_is_removed_only_when_empty_but_for_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("d");
        fs::create_dir(&d).unwrap();
        fs::write(d.join(".peerfold.gone.tmp"), b"partial").unwrap();
        fs::write(d.join("keep-me"), b"data").unwrap();
        let err = remove(&d).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::DirectoryNotEmpty);
        assert_eq!(fs::read(d.join("keep-me")).unwrap(), b"data");
        fs::remove_file(d.join("keep-me")).unwrap();
        remove(&d).unwrap();
        assert!(!d.exists());
    }
}
