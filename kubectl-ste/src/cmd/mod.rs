//! One module per command.

pub mod locate;
pub mod migration;
pub mod ring_change;
pub mod ring_show;
pub mod status;
pub mod version;
