//! How a folder takes part in sync, and in what order it pulls.

use serde::{Deserialize, Serialize};

/// How a folder takes part in sync.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FolderType {
    /// Sends local changes and takes remote ones.
    #[default]
    SendReceive,
    /// Sends local changes, never takes remote ones.
    SendOnly,
    /// Takes remote changes, never sends local ones as the truth.
    ReceiveOnly,
}

impl FolderType {
    /// Syncthing's name for the type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SendReceive => "sendreceive",
            Self::SendOnly => "sendonly",
            Self::ReceiveOnly => "receiveonly",
        }
    }
}

impl std::str::FromStr for FolderType {
    type Err = UnknownFolderType;

    /// Syncthing's names, and the legacy ones it still takes (`readwrite`, `readonly`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "readwrite" => return Ok(Self::SendReceive),
            "readonly" => return Ok(Self::SendOnly),
            _ => {}
        }
        [Self::SendReceive, Self::SendOnly, Self::ReceiveOnly]
            .into_iter()
            .find(|t| t.as_str() == text)
            .ok_or_else(|| UnknownFolderType(text.to_owned()))
    }
}

/// A folder type that is none of Syncthing's three.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown folder type {0:?} (sendreceive, sendonly or receiveonly)")]
pub struct UnknownFolderType(pub String);

/// The order in which a pull round fetches files (Syncthing's folder `order`); directories
/// still come before their contents and deletions after.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PullOrder {
    /// Any order (shuffled each round).
    Random,
    /// By name.
    #[default]
    Alphabetic,
    /// Smallest file first.
    SmallestFirst,
    /// Largest file first.
    LargestFirst,
    /// Oldest modification time first.
    OldestFirst,
    /// Newest modification time first.
    NewestFirst,
}

impl PullOrder {
    /// Every order, by Syncthing's name.
    pub const ALL: [Self; 6] = [
        Self::Random,
        Self::Alphabetic,
        Self::SmallestFirst,
        Self::LargestFirst,
        Self::OldestFirst,
        Self::NewestFirst,
    ];

    /// Syncthing's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Random => "random",
            Self::Alphabetic => "alphabetic",
            Self::SmallestFirst => "smallestFirst",
            Self::LargestFirst => "largestFirst",
            Self::OldestFirst => "oldestFirst",
            Self::NewestFirst => "newestFirst",
        }
    }

    pub(crate) fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl std::str::FromStr for PullOrder {
    type Err = UnknownPullOrder;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|o| o.as_str() == text)
            .ok_or_else(|| UnknownPullOrder(text.to_owned()))
    }
}

/// A pull order that is none of Syncthing's six.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown pull order {0:?} (random, alphabetic, smallestFirst, largestFirst, oldestFirst or newestFirst)"
)]
pub struct UnknownPullOrder(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_orders_read_as_syncthing_writes_them() {
        for order in PullOrder::ALL {
            assert_eq!(order.as_str().parse::<PullOrder>().unwrap(), order);
        }
        assert!("sizeFirst".parse::<PullOrder>().is_err());
    }

    #[test]
    fn syncthing_names_and_legacy_ones() {
        for (text, kind) in [
            ("sendreceive", FolderType::SendReceive),
            ("readwrite", FolderType::SendReceive),
            ("sendonly", FolderType::SendOnly),
            ("readonly", FolderType::SendOnly),
            ("receiveonly", FolderType::ReceiveOnly),
        ] {
            assert_eq!(text.parse::<FolderType>(), Ok(kind), "{text}");
        }
        assert!("receiveencrypted".parse::<FolderType>().is_err());
        assert_eq!(FolderType::SendOnly.as_str(), "sendonly");
    }
}
