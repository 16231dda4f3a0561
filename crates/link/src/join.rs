//! The join of a host to a deployment, as it crosses the wire: the new
//! host (`standby join`) shows the join token and says which site it runs
//! and where it listens; the control plane answers with the host's
//! certificate and key (signed by the deployment's CA), the CA, and the
//! keys of the vaults it will write into and read from.
//!
//! ```text
//! POST /v1/join   Authorization: Bearer JOIN-TOKEN   {"site", "listen"}  →  Joined
//! ```
//!
//! The answer crosses only a connection checked against the CA that the
//! join token file carries, so nothing is trusted on first sight.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const JOIN: &str = "/v1/join";

#[derive(Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub site: String,
    pub listen: String,
}

#[derive(Serialize, Deserialize)]
pub struct Joined {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// Each site's vault key (the contents of its key file), by site.
    pub vault_keys: BTreeMap<String, String>,
}

impl std::fmt::Debug for Joined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.write_str("Joined { .. }")
    }
}
