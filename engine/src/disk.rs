//! The disk side: the scanner (disk -> index entries) and file-system helpers.

pub mod fsutil;
pub mod scanner;
