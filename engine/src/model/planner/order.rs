//! The order a pull carries out its actions in.

use std::cmp::Ordering as CmpOrdering;
use std::hash::BuildHasher as _;

use super::Action;
use crate::model::PullOrder;
use crate::model::entry::FileEntry;

/// Orders actions so directories exist before their contents are written, and contents are
/// removed before their directories: first what fetches no content (directories, symlinks,
/// metadata) in name order (a parent sorts before its children), then the downloads in the
/// folder's pull order (by name within a tie), then deletions in reverse name order.
pub fn order(actions: &mut [Action], pull_order: PullOrder) {
    let stage = |a: &Action| match a {
        _ if a.is_delete() => 2,
        _ if a.fetches() => 1,
        _ => 0,
    };
    // Random order: names hashed with keys drawn afresh for this plan.
    let shuffle = std::hash::RandomState::new();
    let by_pull_order = |a: &FileEntry, b: &FileEntry| match pull_order {
        PullOrder::Alphabetic => CmpOrdering::Equal,
        PullOrder::Random => shuffle.hash_one(&a.name).cmp(&shuffle.hash_one(&b.name)),
        PullOrder::SmallestFirst => a.size.cmp(&b.size),
        PullOrder::LargestFirst => b.size.cmp(&a.size),
        PullOrder::OldestFirst => a.modified.cmp(&b.modified),
        PullOrder::NewestFirst => b.modified.cmp(&a.modified),
    };
    actions.sort_by(|a, b| {
        stage(a).cmp(&stage(b)).then_with(|| match stage(a) {
            0 => a.name().cmp(&b.name()),
            1 => match (a.target(), b.target()) {
                (Some(x), Some(y)) => by_pull_order(x, y).then_with(|| x.name.cmp(&y.name)),
                _ => a.name().cmp(&b.name()),
            },
            _ => b.name().cmp(&a.name()),
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::entry::{FileKind, Timestamp};
    use peerfold_protocol::ShortId;
    use peerfold_protocol::version::VersionVector;

    fn file(name: &str, seconds: i64) -> FileEntry {
        FileEntry {
            name: name.into(),
            kind: FileKind::File,
            size: 1,
            permissions: 0o644,
            modified: Timestamp { seconds, nanos: 0 },
            deleted: false,
            invalid: false,
            sequence: 1,
            version: VersionVector::default(),
            modified_by: ShortId(2),
            symlink_target: String::new(),
            blocks: Vec::new(),
        }
    }

    fn deleted(mut entry: FileEntry) -> FileEntry {
        entry.deleted = true;
        entry
    }

    #[test]
    fn order_creates_parents_first_and_deletes_children_first() {
        let dir = |name: &str| FileEntry {
            kind: FileKind::Directory,
            blocks: Vec::new(),
            ..file(name, 0)
        };
        let mut actions = vec![
            Action::Delete {
                target: deleted(file("old", 0)),
            },
            Action::Fetch {
                target: file("a/b/c", 0),
                sources: vec![],
            },
            Action::Delete {
                target: deleted(file("old/x", 0)),
            },
            Action::CreateDirectory { target: dir("a/b") },
            Action::CreateDirectory { target: dir("a") },
        ];
        order(&mut actions, PullOrder::Alphabetic);
        let names: Vec<&str> = actions.iter().filter_map(Action::name).collect();
        assert_eq!(names, vec!["a", "a/b", "a/b/c", "old/x", "old"]);
    }

    #[test]
    fn downloads_follow_the_pull_order_after_directories() {
        let sized = |name: &str, size: u64, seconds: i64| Action::Fetch {
            target: FileEntry {
                size,
                ..file(name, seconds)
            },
            sources: vec![],
        };
        let actions = vec![
            sized("z", 1, 300),
            sized("a", 30, 100),
            sized("m", 20, 200),
            Action::CreateDirectory {
                target: FileEntry {
                    kind: FileKind::Directory,
                    ..file("zz", 0)
                },
            },
        ];
        let names = |order_by: PullOrder| {
            let mut ordered = actions.clone();
            order(&mut ordered, order_by);
            ordered
                .iter()
                .filter_map(|a| a.name().map(str::to_owned))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(PullOrder::Alphabetic), ["zz", "a", "m", "z"]);
        assert_eq!(names(PullOrder::SmallestFirst), ["zz", "z", "m", "a"]);
        assert_eq!(names(PullOrder::LargestFirst), ["zz", "a", "m", "z"]);
        assert_eq!(names(PullOrder::OldestFirst), ["zz", "a", "m", "z"]);
        assert_eq!(names(PullOrder::NewestFirst), ["zz", "z", "m", "a"]);
        let random = names(PullOrder::Random);
        assert_eq!(random[0], "zz", "directories still come first");
        let mut sorted = random.clone();
        sorted.sort();
        assert_eq!(sorted, ["a", "m", "z", "zz"]);
    }
}
