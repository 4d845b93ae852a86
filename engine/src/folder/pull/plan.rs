//! What a pull round carries out. A whole-folder plan walks the folder in pages of at most
//! [`PLAN_PAGE`] actions (memory stays flat at a million files); names that changed
//! meanwhile are planned beside a page, or alone between pages.

use std::collections::BTreeSet;

use crate::folder::needs::{
    PLAN_PAGE, Rules, needed_actions_for, needed_page, subtree_continues_after,
};
use crate::folder::{Folder, Replan};
use crate::model::planner::{self, Action};
use crate::store::StoreError;

/// The actions of one round.
#[derive(Debug)]
pub(super) struct Planned {
    /// In the order the puller carries them out.
    pub(super) actions: Vec<Action>,
    /// The names a page of the whole-folder walk looked at: those without an action need
    /// nothing (their old errors are gone).
    pub(super) covered: Option<Covered>,
    /// Where the walk goes on: the next page starts after this name.
    pub(super) next: Option<String>,
    /// Deletions left out because what the directory held may come in a later page
    /// (children are deleted first): planned again by name after this round.
    pub(super) deferred: Vec<String>,
}

/// A range of names, `(after, through]`; open-ended where `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Covered {
    after: Option<String>,
    through: Option<String>,
}

impl Covered {
    pub(super) fn contains(&self, name: &str) -> bool {
        self.after.as_deref().is_none_or(|a| name > a)
            && self.through.as_deref().is_none_or(|t| name <= t)
    }
}

/// Plans a round on a read-only connection (a page takes a while at a million names, and
/// the writer must not wait): `page_after`, when set, asks for the page of the walk after
/// that name (`Some(None)`: the first page), beside the names `replan` lists.
pub(super) async fn plan(
    folder: &Folder,
    replan: Replan,
    page_after: Option<Option<String>>,
) -> Result<Planned, StoreError> {
    let (idx, rules, me) = (folder.idx, Rules::of(&folder.config()), folder.me);
    let names = match replan {
        Replan::Everything => BTreeSet::new(),
        Replan::Names(names) => names,
    };
    folder
        .store
        .read(move |store| {
            let mut planned = Planned {
                actions: Vec::new(),
                covered: None,
                next: None,
                deferred: Vec::new(),
            };
            if let Some(after) = page_after {
                let page = needed_page(store, idx, rules, me, after.as_deref(), PLAN_PAGE)?;
                planned.actions = page.actions;
                planned.covered = Some(Covered {
                    after,
                    through: page.next.clone(),
                });
                planned.next = page.next;
            }
            let covered = planned.covered.clone();
            let others = names
                .iter()
                .map(String::as_str)
                .filter(|n| !covered.as_ref().is_some_and(|c| c.contains(n)));
            let by_name = needed_actions_for(store, idx, others, rules, me)?;
            if !by_name.is_empty() {
                planned.actions.extend(by_name);
                planner::order(&mut planned.actions, rules.order);
            }
            if let Some(last) = &planned.next {
                let (waiting, actions) = std::mem::take(&mut planned.actions)
                    .into_iter()
                    .partition(|a: &Action| {
                        a.is_delete() && a.name().is_some_and(|n| subtree_continues_after(n, last))
                    });
                planned.actions = actions;
                planned.deferred = waiting
                    .iter()
                    .filter_map(Action::name)
                    .map(str::to_owned)
                    .collect();
            }
            Ok(planned)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::Covered;

    #[test]
    fn covered_ranges_are_open_below_and_closed_above() {
        let all = Covered::default();
        assert!(all.contains("") && all.contains("z"));
        let page = Covered {
            after: Some("b".into()),
            through: Some("d".into()),
        };
        assert!(!page.contains("b") && page.contains("b/x") && page.contains("d"));
        assert!(!page.contains("d/x") && !page.contains("a"));
        let last = Covered {
            after: Some("d".into()),
            through: None,
        };
        assert!(last.contains("e") && !last.contains("d"));
    }
}
