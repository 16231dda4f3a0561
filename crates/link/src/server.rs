//! A host's TLS listener: accepts connections, finishes their handshakes
//! off the accept loop (a client that stalls or sends garbage hurts only
//! itself), tells who is at the other end ([`Peer`]) and serves an axum
//! router over HTTP/2 (or HTTP/1.1) on each.
//!
//! A client speaking plain HTTP to the TLS port gets a one-line JSON error
//! saying so, instead of a reset it has to guess about.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use crate::identity::host_name;

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait to be accepted.
const CONNECTIONS_MAX: usize = 512;

/// Who is at the other end of a connection (an extension of every request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A host of the deployment: it showed a certificate the deployment's
    /// CA signed, naming the host of `site`.
    Host { site: String },
    /// No certificate: an operator, who must show a token.
    Anonymous,
}

/// What the listener refused, for `status` and tests.
#[derive(Debug, Default)]
pub struct Refusals {
    /// Connections that were not TLS.
    pub plain: AtomicU64,
    /// Handshakes that failed or timed out (a certificate from another CA,
    /// an expired one, garbage).
    pub handshakes: AtomicU64,
}

/// Serves `app` on `listener` with `tls` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    refusals: Arc<Refusals>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    tokio::pin!(shutdown);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    // Out of descriptors or the like: let it pass.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (acceptor, app, refusals) = (acceptor.clone(), app.clone(), refusals.clone());
        tokio::spawn(async move {
            connection(stream, acceptor, app, &refusals).await;
            drop(slot);
        });
    }
}

async fn connection(mut stream: TcpStream, acceptor: tokio_rustls::TlsAcceptor, app: Router, refusals: &Refusals) {
    // A TLS connection begins with a handshake record (0x16).
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == 0x16 => {}
        Ok(Ok(1)) => {
            refusals.plain.fetch_add(1, Ordering::Relaxed);
            let body = r#"{"code":"tls_required","message":"this port speaks TLS only: use https:// with the deployment's CA"}"#;
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.write_all(answer.as_bytes())).await;
            let _ = stream.shutdown().await;
            return;
        }
        _ => return,
    }
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        _ => {
            refusals.handshakes.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let peer = peer_of(tls.get_ref().1.peer_certificates());
    serve_connection(tls, peer, app).await;
}

/// Serves `app` on one connection whose peer is `peer` (HTTP/2 or
/// HTTP/1.1, whichever the client speaks), until it closes. Public for the
/// fuzz target, which plays untrusted bytes into it.
pub async fn serve_connection<Io>(io: Io, peer: Peer, app: Router)
where
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = app.map_request(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(peer.clone());
        request
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // A client that has sent all it will (half-closed) still gets its answers.
    builder.http1().half_close(true).timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HANDSHAKE_TIMEOUT);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .adaptive_window(true)
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(32 << 20)
        .max_frame_size(1 << 20)
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(10)))
        .keep_alive_timeout(Duration::from_secs(20));
    let _ = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service)).await;
}

/// Bytes of a refused request's body read before the refusal is sent.
const REFUSED_BODY_BYTES: usize = 1 << 20;

/// `refusal`, sent once the refused request's body is read (up to 1 MiB,
/// for at most 2 s): answered before it, HTTP/2 resets the stream the
/// client is still sending on, and some clients (curl) then report a
/// framing error instead of the refusal. A larger body is cut off as before.
pub async fn refuse_after_body(
    request: axum::extract::Request,
    refusal: axum::response::Response,
) -> axum::response::Response {
    let body = axum::body::to_bytes(request.into_body(), REFUSED_BODY_BYTES);
    let _ = tokio::time::timeout(Duration::from_secs(2), body).await;
    refusal
}

/// The peer a verified client certificate names (rustls checked it was the
/// deployment CA's); no certificate is an anonymous peer.
fn peer_of(certificates: Option<&[rustls::pki_types::CertificateDer<'_>]>) -> Peer {
    let Some(leaf) = certificates.and_then(|chain| chain.first()) else { return Peer::Anonymous };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) else { return Peer::Anonymous };
    let names = cert.subject_alternative_name().ok().flatten();
    for name in names.iter().flat_map(|names| names.value.general_names.iter()) {
        if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
            if let Some(site) = dns.strip_suffix(".sites.standby") {
                if host_name(site) == *dns {
                    return Peer::Host { site: site.to_string() };
                }
            }
        }
    }
    Peer::Anonymous
}
