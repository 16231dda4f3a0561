//! Identities under a deployment's own certificate authority.
//!
//! `standby init --site NAME --listen ADDR` makes the deployment's CA and
//! the host's certificate; `standby join` has the control plane sign one for
//! the joining host. Hosts prove themselves to each other with these
//! (mutual TLS): a host's certificate names its site
//! ([`host_name`]: `SITE.sites.standby`), and a client reaching a site's
//! host checks the server's certificate is that site's under this CA, and
//! nothing else: no public CA is ever trusted. Operators are not hosts:
//! they check the server the same way and prove themselves with a token
//! (`token`).
//!
//! A host's folder `DIR/tls/`:
//!
//! ```text
//! ca.pem     the deployment's CA certificate (every host)
//! ca.key     its private key (the control plane's host only)
//! host.pem   this host's certificate, signed by the CA
//! host.key   its private key
//! api.pem    the operators' listener's certificate (`standby serve --listen`),
//!            signed by the CA, made anew at each start for the address served
//! api.key    its private key
//! metrics.pem, metrics.key  the same for `--metrics-listen`
//! ```
//!
//! An embedded deployment has no hosts' certificates: its `tls/` holds the
//! CA and the API's certificate, made when it first serves operators or
//! makes a token.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::LinkError;

/// A host's TLS folder, in its deployment.
pub const TLS_DIR: &str = "tls";
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
pub const HOST_CERT: &str = "host.pem";
pub const HOST_KEY: &str = "host.key";

/// How long a host's certificate is valid.
const HOST_VALIDITY: time::Duration = time::Duration::days(5 * 365);
/// How long the CA is valid.
const CA_VALIDITY: time::Duration = time::Duration::days(20 * 365);

/// The name a site's host carries in its certificate, and the name clients
/// ask for when they reach it.
pub fn host_name(site: &str) -> String {
    format!("{site}.sites.standby")
}

/// The deployment's certificate authority: it signs the hosts' certificates.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's certificate, PEM.
    pub cert_pem: String,
}

impl Authority {
    /// A new CA for the deployment named `deployment` (an id, for the
    /// certificate's subject).
    pub fn create(deployment: &str) -> Result<Authority, LinkError> {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, format!("Standby deployment {deployment}"));
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + CA_VALIDITY;
        let key = KeyPair::generate().map_err(|e| LinkError::Tls(format!("making the CA's key: {e}")))?;
        let cert = params.self_signed(&key).map_err(|e| LinkError::Tls(format!("making the CA: {e}")))?;
        Ok(Authority { cert_pem: cert.pem(), issuer: Issuer::new(params, key) })
    }

    /// Writes the CA's certificate and key into `dir` (a host's `tls/`).
    pub fn write(&self, dir: &Path) -> Result<(), LinkError> {
        write_new(&dir.join(CA_CERT), &self.cert_pem)?;
        write_new(&dir.join(CA_KEY), &self.issuer.key().serialize_pem())
    }

    /// The CA kept in `dir`.
    pub fn load(dir: &Path) -> Result<Authority, LinkError> {
        let cert_pem = read(&dir.join(CA_CERT))?;
        let key_path = dir.join(CA_KEY);
        let key = KeyPair::from_pem(&read(&key_path)?)
            .map_err(|e| LinkError::Tls(format!("{} is not a private key: {e}", key_path.display())))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| LinkError::Tls(format!("{} is not a CA certificate: {e}", dir.join(CA_CERT).display())))?;
        Ok(Authority { issuer, cert_pem })
    }

    /// A certificate for the host of `site`, valid for `HOST_VALIDITY`.
    pub fn issue(&self, site: &str) -> Result<HostCertificate, LinkError> {
        self.issue_valid(site, time::OffsetDateTime::now_utc() + HOST_VALIDITY)
    }

    /// A certificate for the host of `site` valid until `not_after` (tests
    /// make expired ones).
    pub fn issue_valid(&self, site: &str, not_after: time::OffsetDateTime) -> Result<HostCertificate, LinkError> {
        let mut params = CertificateParams::new(vec![host_name(site)])
            .map_err(|e| LinkError::Tls(format!("'{site}' cannot name a host: {e}")))?;
        params.distinguished_name.push(DnType::CommonName, host_name(site));
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before =
            (not_after - HOST_VALIDITY).min(time::OffsetDateTime::now_utc() - time::Duration::minutes(5));
        params.not_after = not_after;
        let key = KeyPair::generate().map_err(|e| LinkError::Tls(format!("making a host key: {e}")))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| LinkError::Tls(format!("signing the certificate of site '{site}': {e}")))?;
        Ok(HostCertificate { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

impl Authority {
    /// The certificate of the operators' listener of the control plane
    /// running `site`, listening at `listen`: it names the site's host (the
    /// name the CLI asks for), `localhost`, and the address (every loopback
    /// address for a wildcard), so that a browser trusting the CA reaches it
    /// by address.
    pub fn issue_api(&self, site: &str, listen: std::net::SocketAddr) -> Result<HostCertificate, LinkError> {
        let mut params = CertificateParams::new(vec![host_name(site), "localhost".into()])
            .map_err(|e| LinkError::Tls(format!("'{site}' cannot name a host: {e}")))?;
        let addresses = if listen.ip().is_unspecified() {
            vec![std::net::Ipv4Addr::LOCALHOST.into(), std::net::Ipv6Addr::LOCALHOST.into()]
        } else {
            vec![listen.ip()]
        };
        params.subject_alt_names.extend(addresses.into_iter().map(rcgen::SanType::IpAddress));
        params.distinguished_name.push(DnType::CommonName, format!("Standby API at {listen}"));
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        // Browsers refuse server certificates valid for more than 398 days.
        params.not_after = now + time::Duration::days(397);
        let key = KeyPair::generate().map_err(|e| LinkError::Tls(format!("making the API's key: {e}")))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| LinkError::Tls(format!("signing the API's certificate: {e}")))?;
        Ok(HostCertificate { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// A host's certificate and private key, PEM.
pub struct HostCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

impl HostCertificate {
    /// Writes them into `dir` (a host's `tls/`).
    pub fn write(&self, dir: &Path) -> Result<(), LinkError> {
        write_new(&dir.join(HOST_CERT), &self.cert_pem)?;
        write_new(&dir.join(HOST_KEY), &self.key_pem)
    }

    /// Writes them into `dir` as `NAME.pem` and `NAME.key` (the API's:
    /// `api`), replacing the last ones.
    pub fn write_listener(&self, dir: &Path, name: &str) -> Result<(), LinkError> {
        let (cert, key) = (format!("{name}.pem"), format!("{name}.key"));
        for (name, text) in [(key.as_str(), &self.key_pem), (cert.as_str(), &self.cert_pem)] {
            let (path, next) = (dir.join(name), dir.join(format!("{name}.new")));
            let _ = std::fs::remove_file(&next);
            write_new(&next, text)?;
            std::fs::rename(&next, &path)
                .map_err(|e| LinkError::Tls(format!("cannot write {}: {e}", path.display())))?;
        }
        Ok(())
    }
}

/// A host's identity as TLS uses it: the CA it trusts and its own
/// certificate and key.
#[derive(Clone)]
pub struct Identity {
    roots: Arc<rustls::RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    dir: PathBuf,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        write!(f, "Identity({})", self.dir.display())
    }
}

impl Identity {
    /// The identity kept in `dir` (a host's `tls/`).
    pub fn load(dir: &Path) -> Result<Identity, LinkError> {
        Identity::load_as(dir, HOST_CERT, HOST_KEY)
    }

    /// The identity of the listener `name` (`api`, …) kept in `dir`.
    pub fn load_listener(dir: &Path, name: &str) -> Result<Identity, LinkError> {
        Identity::load_as(dir, &format!("{name}.pem"), &format!("{name}.key"))
    }

    fn load_as(dir: &Path, cert: &str, key: &str) -> Result<Identity, LinkError> {
        let roots = Arc::new(trust(&read(&dir.join(CA_CERT))?, &dir.join(CA_CERT))?);
        let cert_path = dir.join(cert);
        let chain = certificates(&read(&cert_path)?, &cert_path)?;
        let key_path = dir.join(key);
        let key = PrivateKeyDer::from_pem_slice(read(&key_path)?.as_bytes())
            .map_err(|e| LinkError::Tls(format!("{} holds no private key: {e}", key_path.display())))?;
        Ok(Identity { roots, chain, key: Arc::new(key), dir: dir.to_path_buf() })
    }

    /// The server side of a host's listener: its certificate; a client
    /// certificate is asked for and, when given, must be the deployment's
    /// (operators come without one and show a token instead).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, LinkError> {
        let verifier = rustls::server::WebPkiClientVerifier::builder(self.roots.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| LinkError::Tls(format!("client verifier: {e}")))?;
        let mut config = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| LinkError::Tls(format!("{}: {e}", self.dir.display())))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The server side of the operators' listener: its certificate, no
    /// client certificate asked for (browsers would offer one).
    pub fn api_server_config(&self) -> Result<Arc<rustls::ServerConfig>, LinkError> {
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| LinkError::Tls(format!("{}: {e}", self.dir.display())))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The client side of a host reaching another: only the deployment's
    /// CA is trusted, and this host's certificate is shown.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, LinkError> {
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| LinkError::Tls(format!("{}: {e}", self.dir.display())))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

/// The client side of an operator (or a joining host, before it has a
/// certificate): the deployment's CA, given as PEM, is the only one trusted;
/// no certificate is shown.
pub fn operator_client_config(ca_pem: &str, source: &Path) -> Result<rustls::ClientConfig, LinkError> {
    let mut config =
        rustls::ClientConfig::builder().with_root_certificates(Arc::new(trust(ca_pem, source)?)).with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn trust(pem: &str, source: &Path) -> Result<rustls::RootCertStore, LinkError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(pem, source)? {
        roots
            .add(cert)
            .map_err(|e| LinkError::Tls(format!("{}: not a usable CA certificate: {e}", source.display())))?;
    }
    Ok(roots)
}

fn certificates(pem: &str, source: &Path) -> Result<Vec<CertificateDer<'static>>, LinkError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| LinkError::Tls(format!("{} is not a PEM certificate: {e}", source.display())))?;
    if certs.is_empty() {
        return Err(LinkError::Tls(format!("{} holds no certificate", source.display())));
    }
    Ok(certs)
}

fn read(path: &Path) -> Result<String, LinkError> {
    std::fs::read_to_string(path).map_err(|e| LinkError::Tls(format!("cannot read {}: {e}", path.display())))
}

/// Writes a new file readable by this user only.
pub fn write_new(path: &Path, text: &str) -> Result<(), LinkError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let cannot = |e: std::io::Error| LinkError::Tls(format!("cannot write {}: {e}", path.display()));
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(cannot)?;
    file.write_all(text.as_bytes()).map_err(cannot)?;
    file.sync_all().map_err(cannot)
}
