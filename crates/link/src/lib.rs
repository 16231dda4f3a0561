//! The link between a deployment's hosts (a host per site): identities
//! under the deployment's own CA ([`identity`]), operators' tokens
//! ([`token`]), the TLS listener every host runs ([`server`]), and a site's
//! vault served over it ([`vault_service`]) to the other site's splitters
//! ([`remote`]: a [`Backend`](standby_vault::backend::Backend) at
//! `standby://ADDRESS/SITE`), and the control plane's calls on the other
//! site's host ([`host_client`]).

pub mod client;
pub mod host_client;
pub mod identity;
pub mod join;
pub mod remote;
pub mod server;
pub mod token;
pub mod vault_service;

pub use client::{ClientError, ControlClient};
pub use host_client::{HostCallError, HostClient};
pub use identity::{Authority, HostCertificate, Identity};
pub use remote::{open_location, RemoteBackend, RemoteLocation};
pub use server::{Peer, Refusals};
pub use token::{Token, TokenFile, TokenFileRole};

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{0}")]
    Tls(String),
}
