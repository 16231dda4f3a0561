//! The vault engine: a recovery-site store of disks as content-addressed
//! chunks in packs, with one manifest object per recovery point.
//!
//! Key types: [`Vault`] (open/init, points), [`sync::sync_image`],
//! [`restore::restore_point`], [`verify::verify`], [`prune::prune`], and the
//! [`backend::Backend`] trait that every storage location implements.
//!
//! The engine only uses object-store verbs (no append, no rename, no locks):
//! data objects are immutable, a point becomes visible when its manifest is
//! written with a create-only put, and collection deletes nothing that a
//! running sync might reference (leases + a grace period, see `prune`). It
//! never reads or writes outside the backend it was given, except the image
//! files a command names.

pub mod backend;
mod collection;
pub mod compact;
pub mod control;
mod error;
mod index;
pub mod journal;
pub mod key_file;
mod lease;
mod packer;
pub mod prune;
pub mod restore;
pub mod summary;
pub mod sync;
mod vault;
pub mod verify;
pub mod view;

pub use error::VaultError;
pub use index::{ChunkIndex, ChunkLocation};
pub use lease::Hold;
pub use vault::{format_time, InitOptions, PointListing, PointSelector, Vault, CONFIG_PATH};
