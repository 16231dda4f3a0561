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
    listen: SocketAddr,
    app: Router,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, ControlError> {
    let (authority, site) = crate::host::operators_authority(deployment)?;
    let tls = deployment.home.join(TLS_DIR);
    authority.issue_api(site.name(), listen).and_then(|made| made.write_api(&tls)).map_err(link)?;
    let config = Identity::load_api(&tls).and_then(|identity| identity.api_server_config()).map_err(link)?;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        ControlError::Refused(format!("--listen {listen}: cannot listen there ({e}); is another daemon serving there?"))
    })?;
    eprintln!(
        "standby: operators' API at https://{listen} (TLS under the deployment's CA, {})",
        tls.join("ca.pem").display()
    );
    let app = super::access::with_tokens(app, deployment.home.clone());
    Ok(standby_link::server::serve(listener, config, app, Arc::new(Refusals::default()), std::future::pending()))
}

/// The address `--listen` names, free now (checked before the daemon
/// takes over its machines, so that a taken address changes nothing).
pub fn listen_address(text: &str) -> Result<SocketAddr, ControlError> {
    let address: SocketAddr = text.parse().map_err(|_| {
        ControlError::Refused(format!("--listen {text} is not an IP address and port (as 127.0.0.1:7443)"))
    })?;
    std::net::TcpListener::bind(address).map_err(|e| {
        ControlError::Refused(format!("--listen {text}: cannot listen there ({e}); is another daemon serving there?"))
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
