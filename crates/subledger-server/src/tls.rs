//! TLS with rustls (ring provider) when a certificate and key are given.
//!
//! A listener for `axum::serve`: a background task accepts TCP connections and runs each TLS
//! handshake in its own task (bounded in number and time), so a slow or hostile client cannot
//! hold up the others; finished handshakes are handed to the server in order of completion.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Most TLS handshakes in progress at once.
pub const TLS_HANDSHAKES_MAX: usize = 256;
/// Longest a client may take to complete its handshake.
pub const TLS_HANDSHAKE_SECONDS_MAX: u64 = 10;
/// Finished handshakes waiting for the server to take them.
const TLS_READY_QUEUE_MAX: usize = 64;

/// Loads a PEM certificate chain and private key into a rustls server configuration
/// (HTTP/1.1 over TLS 1.2 or 1.3).
pub fn load_config(certificate: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate)
        .map_err(|error| format!("{}: {error}", certificate.display()))?
        .collect::<Result<_, _>>()
        .map_err(|error| format!("{}: {error}", certificate.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate found", certificate.display()));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|error| format!("{}: {error}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| format!("certificate and key do not fit together: {error}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TCP listener that yields TLS streams.
#[derive(Debug)]
pub struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    _acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (sender, ready) = tokio::sync::mpsc::channel(TLS_READY_QUEUE_MAX);
        let acceptor = TlsAcceptor::from(config);
        let handshakes = Arc::new(tokio::sync::Semaphore::new(TLS_HANDSHAKES_MAX));
        let task = tokio::spawn(async move {
            loop {
                let Ok(permit) = Arc::clone(&handshakes).acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(_) => {
                        // Out of file descriptors or similar: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, handoff) = (acceptor.clone(), sender.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let handshake = acceptor.accept(stream);
                    if let Ok(Ok(tls)) = tokio::time::timeout(
                        Duration::from_secs(TLS_HANDSHAKE_SECONDS_MAX),
                        handshake,
                    )
                    .await
                    {
                        let _ = handoff.send((tls, peer)).await;
                    }
                });
                if sender.is_closed() {
                    return;
                }
            }
        });
        Ok(TlsListener {
            ready,
            local,
            _acceptor: task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self._acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accepting task ended (only on shutdown): never yield again.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
