//! NBD: the protocol Standby speaks to QEMU and to every NBD client.
//!
//! [`protocol`] encodes and decodes the wire format (pure, fuzzable);
//! [`server`] runs the handshake and the transmission phase for one
//! [`server::Export`]; [`file::FileExport`] serves a raw image file.
//! The splitter (continuous replication) and the export of recovery points
//! are exports built on these.

pub mod file;
pub mod memory;
pub mod protocol;
pub mod server;

pub use file::FileExport;
pub use memory::MemoryExport;
pub use server::{Export, Server, ServerConfig, ServerStats};
