//! Folders: what a folder needs, from the store through the planner.

pub mod needs;
