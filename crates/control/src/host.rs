//! A deployment with a host per site: `standby init DIR --site NAME
//! --listen ADDR` makes the host holding the control plane (and site
//! NAME), `standby join` adds the other site's host. What each host keeps
//! beside an embedded deployment's files:
//!
//! ```text
//! DIR/tls/           the deployment's CA (its key on the control plane's host only), this host's certificate
//! DIR/admin.token    an operator token (control plane's host)
//! DIR/join.token     a join token file for the other site's host (control plane's host; valid 24 h)
//! DIR/keys/SITE.key  both sites' vault keys: a site's host reads its vault, the other writes into it
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use standby_lifecycle::{Site, SITES};
use standby_link::identity::{Authority, HostCertificate, CA_KEY, TLS_DIR};
use standby_link::join::{JoinRequest, Joined, JOIN};
use standby_link::{ClientError, ControlClient, Token, TokenFile, TokenFileRole};

use crate::config::{Config, HostConfig};
use crate::deployment::{Deployment, KEYS_DIR};
use crate::error::ControlError;
use crate::state::TokenRole;

/// The operator token `init --site` writes.
pub const ADMIN_TOKEN: &str = "admin.token";
/// The join token file `init --site` writes.
pub const JOIN_TOKEN: &str = "join.token";
/// The name `init --site` gives its operator token (`standby token list`).
pub const ADMIN_TOKEN_NAME: &str = "admin";

/// The name a join token is listed by: `join-` and the start of its hash.
pub fn join_token_name(token: &Token) -> String {
    format!("join-{}", &token.hash()[..12])
}

/// How long a join token lets a host join.
pub const JOIN_TOKEN_VALIDITY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The host holding the control plane, as `init --site` made it.
pub struct MadeHost {
    pub deployment: Deployment,
    pub admin_token: PathBuf,
    pub join_token: PathBuf,
}

/// The site named `name`.
pub fn site_named(name: &str) -> Result<Site, ControlError> {
    Site::parse(name).ok_or_else(|| {
        let known: Vec<&str> = SITES.iter().map(|site| site.name()).collect();
        ControlError::Refused(format!("no site named '{name}': a deployment's sites are {}", known.join(" and ")))
    })
}

/// The address a host listens at: a concrete address the other site
/// reaches, and free now.
pub fn listen_address(text: &str) -> Result<SocketAddr, ControlError> {
    let address: SocketAddr = text.parse().map_err(|_| {
        ControlError::Refused(format!("--listen {text} is not an IP address and port (as 10.0.0.2:7450)"))
    })?;
    if address.ip().is_unspecified() || address.port() == 0 {
        return Err(ControlError::Refused(format!(
            "--listen {text}: give the address and port the other site reaches this host at, not a wildcard"
        )));
    }
    std::net::TcpListener::bind(address).map_err(|e| {
        ControlError::Refused(format!("--listen {text}: cannot listen there ({e}); choose a free address of this host"))
    })?;
    Ok(address)
}

/// Makes the host of `site` holding the control plane in `dir`.
pub fn init_host(dir: &Path, site: &str, listen: &str) -> Result<MadeHost, ControlError> {
    let site = site_named(site)?;
    let listen = listen_address(listen)?;
    let mut config = Config::default_for_init();
    config.host = Some(HostConfig { site, listen, control: None });
    let deployment = Deployment::make(dir, config, |home, state| {
        let tls = home.join(TLS_DIR);
        std::fs::create_dir(&tls).map_err(|e| ControlError::io(&tls, e))?;
        let authority = Authority::create(&deployment_id()?).map_err(link)?;
        authority.write(&tls).map_err(link)?;
        authority.issue(site.name()).map_err(link)?.write(&tls).map_err(link)?;
        let admin = Token::generate().map_err(link)?;
        TokenFile::new(TokenFileRole::Operator, &admin, site.name(), &authority.cert_pem, None)
            .write_file(&home.join(ADMIN_TOKEN))
            .map_err(link)?;
        state.add_token(ADMIN_TOKEN_NAME, &admin.hash(), TokenRole::Admin, None)?;
        let join = Token::generate().map_err(link)?;
        let expires = jiff::Timestamp::now() + JOIN_TOKEN_VALIDITY;
        TokenFile::new(TokenFileRole::Join, &join, site.name(), &authority.cert_pem, Some(expires))
            .write_file(&home.join(JOIN_TOKEN))
            .map_err(link)?;
        state.add_token(&join_token_name(&join), &join.hash(), TokenRole::Join, Some(expires))?;
        // Both vaults' keys: this site's vault is made with its key; the
        // other's goes to the host that joins for it.
        for site in SITES {
            let key = key_file(home, site);
            standby_vault::key_file::create(&key).map_err(ControlError::Failed)?;
        }
        Ok(())
    })?;
    let (admin_token, join_token) = (deployment.home.join(ADMIN_TOKEN), deployment.home.join(JOIN_TOKEN));
    Ok(MadeHost { deployment, admin_token, join_token })
}

/// Makes the host of `site` in `dir`, joined to the control plane at
/// `control` with the join token file `join_token`.
pub fn join(
    dir: &Path,
    site: &str,
    control: &str,
    join_token: &Path,
    listen: &str,
) -> Result<Deployment, ControlError> {
    let site = site_named(site)?;
    let address = listen_address(listen)?;
    let file = TokenFile::read_file(join_token, TokenFileRole::Join).map_err(ControlError::Refused)?;
    if file.control_site == site.name() {
        return Err(ControlError::Refused(format!(
            "the control plane's host runs the {site} site; this host joins for the other one ({})",
            site.other()
        )));
    }
    // Checked before the control plane records the host, so that a
    // refusal here leaves nothing anywhere.
    Deployment::check_new_dir(dir)?;
    let token = file.token().map_err(ControlError::Refused)?;
    let client = ControlClient::new(control, &file.control_site, &file.ca_pem, token).map_err(ControlError::Refused)?;
    let request = JoinRequest { site: site.name().into(), listen: address.to_string() };
    let joined: Joined = client.post(JOIN, &request).map_err(|e| match e {
        ClientError::Unreachable(e) => ControlError::Refused(format!("{e}; check --control and that its host serves")),
        ClientError::Answered { message, .. } => {
            ControlError::Refused(format!("the control plane refused the join: {message}"))
        }
    })?;
    let mut config = Config::default_for_init();
    config.host = Some(HostConfig { site, listen: address, control: Some(control.trim_end_matches('/').to_string()) });
    Deployment::make(dir, config, |home, _| {
        let tls = home.join(TLS_DIR);
        std::fs::create_dir(&tls).map_err(|e| ControlError::io(&tls, e))?;
        write(&tls.join(standby_link::identity::CA_CERT), &joined.ca_pem)?;
        HostCertificate { cert_pem: joined.cert_pem.clone(), key_pem: joined.key_pem.clone() }
            .write(&tls)
            .map_err(link)?;
        for site in SITES {
            let key = joined.vault_keys.get(site.name()).ok_or_else(|| {
                ControlError::Failed(format!("the control plane sent no key for the {site} site's vault"))
            })?;
            write(&key_file(home, site), key)?;
        }
        Ok(())
    })
}

/// What the control plane answers a host joining for `request.site`, once
/// its token is known to be a join token.
pub fn admit(deployment: &Deployment, request: &JoinRequest) -> Result<Joined, ControlError> {
    let own = deployment.config.host.as_ref().map(|host| host.site);
    let site = site_named(&request.site)?;
    if own == Some(site) {
        return Err(ControlError::Conflict(format!("this host runs the {site} site; join the other one")));
    }
    let listen: SocketAddr = request
        .listen
        .parse()
        .map_err(|_| ControlError::Refused(format!("'{}' is not an IP address and port", request.listen)))?;
    let tls = deployment.home.join(TLS_DIR);
    let authority = Authority::load(&tls).map_err(link)?;
    let certificate = authority.issue(site.name()).map_err(link)?;
    let mut vault_keys = std::collections::BTreeMap::new();
    for site in SITES {
        let path = key_file(&deployment.home, site);
        let key = std::fs::read_to_string(&path).map_err(|e| ControlError::io(&path, e))?;
        vault_keys.insert(site.name().to_string(), key);
    }
    // Recorded last: a join refused above can be tried again.
    deployment.state.add_host(site, &listen.to_string())?;
    Ok(Joined { ca_pem: authority.cert_pem, cert_pem: certificate.cert_pem, key_pem: certificate.key_pem, vault_keys })
}

fn key_file(home: &Path, site: Site) -> PathBuf {
    home.join(KEYS_DIR).join(format!("{site}.key"))
}

/// Writes a new file readable by this user only.
fn write(path: &Path, text: &str) -> Result<(), ControlError> {
    standby_link::identity::write_new(path, text).map_err(link)
}

/// One maker of the CA at a time.
static AUTHORITY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The deployment's CA and the site whose host name the API's certificate
/// carries; made for an embedded deployment that has none yet.
pub(crate) fn operators_authority(deployment: &Deployment) -> Result<(Authority, Site), ControlError> {
    let _one = AUTHORITY.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let tls = deployment.home.join(TLS_DIR);
    let site = match &deployment.config.host {
        Some(host) if host.control.is_some() => {
            return Err(ControlError::Refused(format!(
                "this host runs the {} site's agent; operators and tokens are served by the control plane's host \
                 ({})",
                host.site,
                host.control.as_deref().unwrap_or_default()
            )))
        }
        Some(host) => host.site,
        None => Site::Primary,
    };
    if !tls.join(CA_KEY).exists() {
        if deployment.config.host.is_some() {
            return Err(ControlError::Failed(format!(
                "{} is missing: the deployment is damaged",
                tls.join(CA_KEY).display()
            )));
        }
        std::fs::create_dir_all(&tls).map_err(|e| ControlError::io(&tls, e))?;
        // A certificate without its key is what a crash while making them leaves.
        let _ = std::fs::remove_file(tls.join(standby_link::identity::CA_CERT));
        let made = Authority::create(&deployment_id()?).map_err(link)?;
        made.write(&tls).map_err(link)?;
    }
    Ok((Authority::load(&tls).map_err(link)?, site))
}

pub(crate) fn deployment_id() -> Result<String, ControlError> {
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).map_err(|e| ControlError::Failed(format!("reading the system's random source: {e}")))?;
    Ok(id.iter().map(|b| format!("{b:02x}")).collect())
}

fn link(e: standby_link::LinkError) -> ControlError {
    ControlError::Failed(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_embedded_deployment_gets_its_ca_once() {
        let dir = tempfile::tempdir().unwrap();
        let deployment = Deployment::init(&dir.path().join("d")).unwrap();
        let (first, site) = operators_authority(&deployment).unwrap();
        let (again, _) = operators_authority(&deployment).unwrap();
        assert_eq!(site, Site::Primary);
        assert_eq!(first.cert_pem, again.cert_pem);
        let key = deployment.home.join(TLS_DIR).join(CA_KEY);
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&key.metadata().unwrap().permissions()) & 0o077, 0);
    }
}
