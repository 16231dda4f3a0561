//! The control plane's API: what the daemon (`standby serve`) answers and
//! what its clients send, as types; one error body with a stable
//! [`ErrorCode`]; and [`Client`], the typed client the CLI uses for every
//! request to a daemon.
//!
//! **API boundary.** This crate and the edges that speak HTTP (the daemon's
//! handlers, the CLI) are the only places that know the wire: the routes
//! ([`routes`]), the JSON shapes, the status codes. The control plane's
//! jobs return these types and know nothing of HTTP.
//!
//! Fields whose inside belongs to the control plane's own records (a
//! machine's `details`, its NICs' attachments, a splitter's raw status
//! beyond [`SplitterStatus`]) travel as JSON values the client shows as
//! they are.

mod client;
mod error;
pub mod routes;
mod types;

pub use client::{Client, ClientError};
pub use error::{ErrorBody, ErrorCode, Hint};
pub use types::*;
