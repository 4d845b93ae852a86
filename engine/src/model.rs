//! The pure model: no runtime, no database, no file system (only `std` and the protocol
//! crate). Entries, names from peers, the planner's decisions, a name's view across
//! devices, counts, the folder actions' rewrites, what is announced to peers, and the checks
//! of this device's own version counters in what peers send.

pub mod announce;
pub(crate) mod block_delta;
pub mod counts;
pub mod entry;
mod folder_type;
pub mod names;
pub mod own_counters;
pub mod planner;
pub mod refused;
pub mod rewrite;
pub mod view;

pub use folder_type::{FolderType, PullOrder, UnknownFolderType, UnknownPullOrder};
