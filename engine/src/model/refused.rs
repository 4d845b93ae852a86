//! The entries a folder refused from peers, as its error list shows them: bounded, since
//! every name in it came from a peer.

use std::collections::{BTreeMap, VecDeque};

use peerfold_protocol::DeviceId;

/// Refusals listed per folder and device at most; that device's oldest goes first, so one
/// peer's flood cannot push another's refusals out. A hundred is more than a person reads,
/// and with names cut to [`NAME_EXCERPT_BYTES`] a device's part of the list stays under
/// 40 KiB however many entries it sends.
pub const MAX_LISTED: usize = 100;

/// Bytes of a refused name that are listed (a name may have 4,096), before its control
/// characters are escaped.
pub const NAME_EXCERPT_BYTES: usize = crate::model::names::SHOWN_NAME_BYTES;

/// The refused entries of one folder, newest kept.
#[derive(Debug, Default)]
pub struct RefusedEntries {
    /// (device, name excerpt) -> why, in the order they came.
    listed: VecDeque<((DeviceId, String), String)>,
}

impl RefusedEntries {
    /// Lists `name` from `device` as refused, for `why`; an earlier refusal of the same is
    /// replaced.
    pub fn note(&mut self, device: DeviceId, name: &str, why: String) {
        let key = (device, excerpt(name));
        self.listed.retain(|(k, _)| *k != key);
        let from_device = self.listed.iter().filter(|((d, _), _)| *d == device);
        if from_device.count() >= MAX_LISTED
            && let Some(oldest) = self.listed.iter().position(|((d, _), _)| *d == device)
        {
            self.listed.remove(oldest);
        }
        self.listed.push_back((key, why));
    }

    /// `device` sent an entry for `name` that was taken: it is no longer refused.
    pub fn clear(&mut self, device: DeviceId, name: &str) {
        if self.listed.is_empty() {
            return;
        }
        let key = (device, excerpt(name));
        self.listed.retain(|(k, _)| *k != key);
    }

    /// `device` sent its whole index again: what it said before no longer stands.
    pub fn clear_device(&mut self, device: DeviceId) {
        self.listed.retain(|((d, _), _)| *d != device);
    }

    /// (name excerpt, why), by name; a name refused from several devices shows once, with
    /// the last reason.
    pub fn list(&self) -> BTreeMap<String, String> {
        self.listed
            .iter()
            .map(|((device, name), why)| {
                (
                    name.clone(),
                    format!("refused from {}: {why}", device.short()),
                )
            })
            .collect()
    }

    /// Whether anything from `device` is listed.
    pub fn lists(&self, device: DeviceId) -> bool {
        self.listed.iter().any(|((d, _), _)| *d == device)
    }

    /// Whether nothing is listed.
    pub fn is_empty(&self) -> bool {
        self.listed.is_empty()
    }
}

/// At most [`NAME_EXCERPT_BYTES`] of `name`, cut at a character boundary, marked when cut,
/// with control characters escaped (`\u{1b}`, `\n`): a list line a terminal shows as it is.
pub fn excerpt(name: &str) -> String {
    let cut = crate::model::names::shown(name);
    if !cut.chars().any(char::is_control) {
        return cut;
    }
    let mut out = String::with_capacity(cut.len() + 16);
    for c in cut.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: DeviceId = DeviceId::from_bytes([2; 32]);
    const OTHER: DeviceId = DeviceId::from_bytes([3; 32]);

    #[test]
    fn the_list_is_bounded_and_names_are_cut() {
        let mut refused = RefusedEntries::default();
        for i in 0..MAX_LISTED + 50 {
            refused.note(PEER, &format!("n{i:04}"), "why".into());
        }
        let list = refused.list();
        assert_eq!(list.len(), MAX_LISTED);
        assert!(!list.contains_key("n0000") && list.contains_key("n0149"));
        let long = "é".repeat(3000);
        let cut = excerpt(&long);
        assert!(
            cut.len() <= NAME_EXCERPT_BYTES + '…'.len_utf8(),
            "{}",
            cut.len()
        );
        assert!(cut.ends_with('…'));
        assert_eq!(excerpt("short"), "short");
        assert_eq!(excerpt("a\u{1b}[2J\nb"), "a\\u{1b}[2J\\nb");
    }

    #[test]
    fn one_device_cannot_push_out_another_devices_refusals() {
        let mut refused = RefusedEntries::default();
        refused.note(OTHER, "theirs", "why".into());
        for i in 0..MAX_LISTED * 3 {
            refused.note(PEER, &format!("n{i:04}"), "why".into());
        }
        let list = refused.list();
        assert_eq!(list.len(), MAX_LISTED + 1);
        assert!(list["theirs"].contains(&OTHER.short().to_string()));
    }

    #[test]
    fn a_taken_entry_clears_its_refusal_from_that_device_only() {
        let mut refused = RefusedEntries::default();
        refused.note(PEER, "a", "bad".into());
        refused.note(OTHER, "b", "bad".into());
        refused.note(PEER, "a", "worse".into());
        assert_eq!(refused.list().len(), 2);
        assert!(refused.list()["a"].ends_with("worse"));
        refused.clear(OTHER, "a");
        assert_eq!(refused.list().len(), 2);
        refused.clear(PEER, "a");
        assert_eq!(refused.list().keys().collect::<Vec<_>>(), ["b"]);
        refused.clear_device(OTHER);
        assert!(refused.is_empty());
    }
}
