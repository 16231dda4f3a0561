//! The operators' listener (`standby serve --listen ADDR`): the API over
//! TLS, for operators' tokens (`access.rs`), on any host holding the
//! control plane; and the operators' tokens themselves.
//!
//! Its certificate is signed by the deployment's CA (`DIR/tls/`, made here
//! for an embedded deployment the first time it serves operators or makes a
//! token) and made anew at every start for the address served; a token file
//! carries the CA, so the CLI trusts nothing else.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use standby_api::{NewToken, TokenRequest, TokenRole};
use standby_link::identity::{Identity, TLS_DIR};
use standby_link::{Refusals, Token};

use super::Daemon;
use crate::deployment::Deployment;
use crate::error::ControlError;

/// Binds the operators' listener at `listen` (before the daemon says it
/// serves, so a taken address is an error at start) and returns what serves
/// `app` there.
pub(super) async fn bind(
    deployment: &Deployment,
    kind: Listener,
    listen: SocketAddr,
    app: Router,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, ControlError> {
    let (authority, site) = crate::host::operators_authority(deployment)?;
    let tls = deployment.home.join(TLS_DIR);
    let name = kind.name();
    authority.issue_api(site.name(), listen).and_then(|made| made.write_listener(&tls, name)).map_err(link)?;
    let config = Identity::load_listener(&tls, name).and_then(|identity| identity.api_server_config()).map_err(link)?;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        ControlError::Refused(format!("--listen {listen}: cannot listen there ({e}); is another daemon serving there?"))
    })?;
    eprintln!(
        "standby: {} at https://{listen} (TLS under the deployment's CA, {})",
        kind.serves(),
        tls.join("ca.pem").display()
    );
    Ok(standby_link::server::serve(listener, config, app, Arc::new(Refusals::default()), std::future::pending()))
}

/// A listener for operators and their tools.
#[derive(Debug, Clone, Copy)]
pub(super) enum Listener {
    /// `--listen`: the API, to tokens.
    Api,
    /// `--metrics-listen`: `/metrics` alone, to anyone who reaches it.
    Metrics,
}

impl Listener {
    /// Its certificate's files in `tls/`: `NAME.pem`, `NAME.key`.
    fn name(self) -> &'static str {
        match self {
            Listener::Api => "api",
            Listener::Metrics => "metrics",
        }
    }

    fn serves(self) -> &'static str {
        match self {
            Listener::Api => "operators' API",
            Listener::Metrics => "metrics (no token asked)",
        }
    }
}

/// The address `--listen` names, free now (checked before the daemon
/// takes over its machines, so that a taken address changes nothing).
pub fn listen_address(flag: &str, text: &str) -> Result<SocketAddr, ControlError> {
    let address: SocketAddr = text.parse().map_err(|_| {
        ControlError::Refused(format!("{flag} {text} is not an IP address and port (as 127.0.0.1:7443)"))
    })?;
    std::net::TcpListener::bind(address).map_err(|e| {
        ControlError::Refused(format!("{flag} {text}: cannot listen there ({e}); is another daemon serving there?"))
    })?;
    Ok(address)
}

impl Daemon {
    /// A new operator token: recorded by its hash, its secret answered once.
    pub(super) fn create_token(&self, request: &TokenRequest) -> Result<NewToken, ControlError> {
        let deployment = self.deployment()?;
        let (authority, site) = crate::host::operators_authority(&deployment)?;
        let role = if request.read_only { TokenRole::ReadOnly } else { TokenRole::Admin };
        let token = Token::generate().map_err(link)?;
        deployment.state.add_token(&request.name, &token.hash(), role, None)?;
        Ok(NewToken {
            name: request.name.clone(),
            role,
            token: token.secret().to_string(),
            ca_pem: authority.cert_pem.clone(),
            control_site: site,
        })
    }
}

fn link(e: standby_link::LinkError) -> ControlError {
    ControlError::Failed(e.to_string())
}
