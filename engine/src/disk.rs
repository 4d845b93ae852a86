//! The disk side: the scanner (disk -> index entries), the watcher, kept versions, local
//! block reuse and the assembly of pulled files, and file-system helpers.

pub(crate) mod assemble;
pub(crate) mod conflicts;
pub mod fsutil;
pub(crate) mod reuse;
pub mod scanner;
pub(crate) mod versioning;
pub mod versions;
pub(crate) mod watch;
