//! The control plane's state in the vaults (a host per site): the daemon
//! holding the control plane writes a [`ControlDocument`] into each site's
//! vault whenever it changed (`standby_vault::control`, docs/format.md
//! "Control records"), and `standby recover-control` rebuilds a lost
//! control plane on the other site's host from the one in that site's
//! vault: every machine's definition, policy, lifecycle state and place,
//! and the policies. Paths under the control plane's folder are kept
//! relative to it (`{home}/…`), and land under the folder recovering them.
//! Tokens, keys and the CA are never in a vault.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use standby_api::Policy;
use standby_lifecycle::Site;
use standby_link::identity::{Authority, TLS_DIR};
use standby_link::{Token, TokenFile, TokenFileRole};

use crate::deployment::{write_config, Deployment};
use crate::error::ControlError;
use crate::host::{join_token_name, ADMIN_TOKEN, ADMIN_TOKEN_NAME, JOIN_TOKEN, JOIN_TOKEN_VALIDITY};
use crate::site::remote::{paths_from_wire, paths_to_wire};
use crate::state::TokenRole;
use crate::vaults::VaultAddress;
use crate::Machine;

/// The version of [`ControlDocument`] this build writes and reads.
pub const DOCUMENT_VERSION: u32 = 1;

/// What a vault holds of the control plane.
#[derive(Debug, Serialize, Deserialize)]
pub struct ControlDocument {
    pub version: u32,
    /// The site whose host held the control plane.
    pub control_site: Site,
    pub policies: Vec<Policy>,
    pub machines: Vec<Machine>,
}

/// The document of `deployment`'s control plane as a vault keeps it.
pub(crate) fn document(deployment: &Deployment, control_site: Site) -> Result<Vec<u8>, ControlError> {
    let document = ControlDocument {
        version: DOCUMENT_VERSION,
        control_site,
        policies: deployment.state.policies()?,
        machines: deployment.state.machines()?,
    };
    let mut value = serde_json::to_value(&document).map_err(|e| ControlError::Failed(format!("a record: {e}")))?;
    paths_to_wire(&mut value, &deployment.home);
    Ok(serde_json::to_vec(&value).expect("a JSON value serialises"))
}

/// What `recover-control` did.
pub struct Recovered {
    pub deployment: Deployment,
    /// When the record it rebuilt from was written.
    pub record_time: String,
    pub machines: Vec<(String, String, Site)>,
    pub admin_token: PathBuf,
    pub join_token: PathBuf,
}

/// Makes the joined host at `dir` the control plane's, from the newest
/// control record in the vault at `vault` (opened with `key_file`, by
/// default this host's key for its own site's vault). Everything is
/// checked before anything changes.
pub fn recover_control(dir: &Path, vault: &str, key_file: Option<&Path>) -> Result<Recovered, ControlError> {
    let deployment = Deployment::open(dir)?;
    let Some(host) = deployment.config.host.clone() else {
        return Err(ControlError::Refused(format!(
            "{} is a deployment on one host, whose control plane is its own; recover-control is for the folder \
             of a host made by `standby join`",
            deployment.home.display()
        )));
    };
    if host.control.is_none() {
        return Err(ControlError::Refused(format!(
            "{} already holds the deployment's control plane",
            deployment.home.display()
        )));
    }
    let socket = deployment.run_dir().join(crate::deployment::SOCKET);
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        return Err(ControlError::Conflict(format!(
            "the daemon of {} is running; stop it first (it becomes the control plane's when started again)",
            deployment.home.display()
        )));
    }
    if !deployment.state.machines()?.is_empty() {
        return Err(ControlError::Refused(format!("{} already holds machines", deployment.home.display())));
    }
    let key_file = key_file.map(Path::to_path_buf).or_else(|| deployment.vault_at(host.site).key_file);
    let address = VaultAddress { location: vault.to_string(), key_file, site: None };
    let opened = address.open().map_err(|e| ControlError::Refused(e.to_string()))?;
    let record = standby_vault::control::latest_record(&opened)?.ok_or_else(|| {
        ControlError::Refused(format!(
            "the vault {vault} holds no control record: its control plane never wrote one (it writes into each \
             site's vault while it serves)"
        ))
    })?;
    let mut value: serde_json::Value = serde_json::from_slice(&record.body)
        .map_err(|e| ControlError::Failed(format!("the control record in {vault} does not parse: {e}")))?;
    let version = value["version"].as_u64().unwrap_or(0);
    if version > u64::from(DOCUMENT_VERSION) {
        return Err(ControlError::Refused(format!(
            "the control record in {vault} is version {version}; this standby reads up to {DOCUMENT_VERSION}: \
             recover with a newer standby"
        )));
    }
    paths_from_wire(&mut value, &deployment.home);
    let document: ControlDocument = serde_json::from_value(value)
        .map_err(|e| ControlError::Failed(format!("the control record in {vault} does not read: {e}")))?;

    let mut deployment = deployment;
    rebuild_state(&mut deployment, &document)?;
    let (admin_token, join_token) = new_identity(&deployment, host.site)?;
    let mut config = deployment.config.clone();
    config.host.as_mut().expect("checked").control = None;
    write_config(&deployment.home, &config)?;
    let machines = document
        .machines
        .iter()
        .map(|machine| (machine.name().to_string(), machine.state.name().to_string(), machine.active_site))
        .collect();
    Ok(Recovered {
        deployment: Deployment::open(&deployment.home)?,
        record_time: standby_vault::format_time(record.time_micros),
        machines,
        admin_token,
        join_token,
    })
}

/// The policies and machines of `document` in the state.
fn rebuild_state(deployment: &mut Deployment, document: &ControlDocument) -> Result<(), ControlError> {
    let known: Vec<String> = deployment.state.policies()?.into_iter().map(|policy| policy.name).collect();
    for policy in document.policies.iter().filter(|policy| !known.contains(&policy.name)) {
        deployment.state.add_policy(policy)?;
    }
    for machine in &document.machines {
        deployment.state.add_machine(&machine.definition, &machine.disks, machine.active_site)?;
        let name = machine.name();
        match &machine.policy {
            Some(policy) => {
                deployment.state.set_machine_protection(name, machine.state, policy, machine.group.as_deref())?
            }
            None => deployment.state.set_machine_state(name, machine.state, Some(None))?,
        }
        deployment.state.set_machine_placement(
            name,
            machine.state,
            machine.active_site,
            machine.generation,
            &machine.details,
        )?;
    }
    Ok(())
}

/// A new CA with this host's certificate (the old CA's key was on the lost
/// host), an admin token and a join token for a new host of the other
/// site. The host's old `tls/` is kept beside, renamed.
fn new_identity(deployment: &Deployment, site: Site) -> Result<(PathBuf, PathBuf), ControlError> {
    let home = &deployment.home;
    let link = |e: standby_link::LinkError| ControlError::Failed(e.to_string());
    let tls = home.join(TLS_DIR);
    let replaced = home.join(format!("{TLS_DIR}.before-recover-control-{}", jiff::Timestamp::now().as_second()));
    std::fs::rename(&tls, &replaced).map_err(|e| ControlError::io(&tls, e))?;
    std::fs::create_dir(&tls).map_err(|e| ControlError::io(&tls, e))?;
    let authority = Authority::create(&crate::host::deployment_id()?).map_err(link)?;
    authority.write(&tls).map_err(link)?;
    authority.issue(site.name()).map_err(link)?.write(&tls).map_err(link)?;
    let admin = Token::generate().map_err(link)?;
    let admin_token = home.join(ADMIN_TOKEN);
    TokenFile::new(TokenFileRole::Operator, &admin, site.name(), &authority.cert_pem, None)
        .write_file(&admin_token)
        .map_err(link)?;
    deployment.state.add_token(ADMIN_TOKEN_NAME, &admin.hash(), TokenRole::Admin, None)?;
    let join = Token::generate().map_err(link)?;
    let expires = jiff::Timestamp::now() + JOIN_TOKEN_VALIDITY;
    let join_token = home.join(JOIN_TOKEN);
    TokenFile::new(TokenFileRole::Join, &join, site.name(), &authority.cert_pem, Some(expires))
        .write_file(&join_token)
        .map_err(link)?;
    deployment.state.add_token(&join_token_name(&join), &join.hash(), TokenRole::Join, Some(expires))?;
    Ok((admin_token, join_token))
}
