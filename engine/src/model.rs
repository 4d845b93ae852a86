//! The pure model: no runtime, no database, no file system (only `std` and the protocol
//! crate). Entries, names from peers, and the planner's decisions.

pub mod entry;
mod folder_type;
pub mod names;
pub mod planner;

pub use folder_type::{FolderType, UnknownFolderType};
