//! Folders at run time: each one's handle (state, stats, errors, and the operations the
//! adapters call: scan, override, revert, ignores, versions, file info, needs) and its
//! tasks (scan loop, watcher, puller, summary). The folder side reaches the network only
//! through the `Peers` port.

mod actions;
pub(crate) mod counts_changed;
mod fetch;
mod files;
mod handle;
pub mod needs;
pub(crate) mod offers;
pub(crate) mod pull;
pub(crate) mod refused;
pub(crate) mod registry;
mod restore;
pub(crate) mod scan_loop;
pub(crate) mod summary_loop;
mod transfers;

pub use actions::FolderActionError;
pub use files::{ConflictCopy, DeviceVersion, FileInfo, IgnoresError};
pub(crate) use handle::Replan;
pub use handle::{Folder, FolderHandle, FolderState, FolderStats};
pub use restore::{ConflictChoice, RestoreError};
pub use scan_loop::ScanFailed;
pub use transfers::{Download, Upload};
