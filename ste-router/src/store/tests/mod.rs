//! The data paths on in-memory shards (see `store/testing.rs`): what each
//! does to the shards, the index, the revision space and the watch feed.

mod batch;
mod migrate;
mod read;
mod write;
