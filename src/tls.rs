//! Optional TLS on either listener (rustls with the *ring* provider), for deployments
//! without a terminating load balancer.
//!
//! `[client.tls]` / `[management.tls]` name a PEM certificate chain and private key; both
//! empty means plain TCP. The files are read at startup (a bad one is a configuration
//! error naming its key); a reload does not re-read them. Only HTTP/1.1 is offered (ALPN
//! `http/1.1`), since WebSocket upgrades and the management API both use it.
//!
//! On the client edge the TLS handshake runs in the connection's own task, under the
//! header deadline, and the stream becomes a [`ClientIo`]: one type for plain and TLS
//! connections, so the handshake and session code is the same for both and a plain
//! connection costs a branch per read, not a box. The management listener gets a
//! [`TlsListener`] whose accept loop hands handshakes to their own tasks, so a slow client
//! never blocks it; both are spawned through the node's task tracker and stop on shutdown.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::config::{ConfigError, Settings, TlsSettings};

/// TLS handshakes the management listener runs at once; more wait for a slot.
const MAX_PENDING_HANDSHAKES: usize = 256;

/// The TLS acceptors of both listeners (`None`: plain TCP).
#[derive(Clone, Default)]
pub struct Acceptors {
    /// The WebSocket listener's.
    pub client: Option<TlsAcceptor>,
    /// The management listener's.
    pub management: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Acceptors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptors")
            .field("client", &self.client.is_some())
            .field("management", &self.management.is_some())
            .finish()
    }
}

impl Acceptors {
    /// Reads the certificate and key files both sections name.
    pub fn build(settings: &Settings) -> Result<Self, ConfigError> {
        Ok(Self {
            client: acceptor("client.tls", &settings.client.tls)?,
            management: acceptor("management.tls", &settings.management.tls)?,
        })
    }
}

/// A TLS acceptor for `tls`, or `None` when it is off.
pub fn acceptor(key: &str, tls: &TlsSettings) -> Result<Option<TlsAcceptor>, ConfigError> {
    if !tls.enabled() {
        return Ok(None);
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert_file)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| {
            ConfigError::invalid(
                format!("{key}.cert_file"),
                format!("{}: {e}", tls.cert_file),
            )
        })?;
    if certs.is_empty() {
        return Err(ConfigError::invalid(
            format!("{key}.cert_file"),
            format!("{}: no certificate in the file", tls.cert_file),
        ));
    }
    let private_key = PrivateKeyDer::from_pem_file(&tls.key_file).map_err(|e| {
        ConfigError::invalid(format!("{key}.key_file"), format!("{}: {e}", tls.key_file))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::invalid(key, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, private_key)
        .map_err(|e| {
            ConfigError::invalid(
                key,
                format!("certificate and key do not work together: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

/// A client connection: plain TCP or TLS over TCP.
#[derive(Debug)]
pub enum ClientIo {
    /// `ws://`.
    Plain(TcpStream),
    /// `wss://` (boxed: a TLS session is large and most deployments terminate TLS elsewhere).
    Tls(Box<TlsStream<TcpStream>>),
}

/// Wraps an accepted connection: as it is without TLS, else after a TLS handshake bounded
/// by `deadline`. `None` when the handshake fails or times out (logged at debug: the
/// client's fault).
pub async fn accept(
    acceptor: Option<&TlsAcceptor>,
    stream: TcpStream,
    deadline: Duration,
    peer: SocketAddr,
) -> Option<ClientIo> {
    let Some(acceptor) = acceptor else {
        return Some(ClientIo::Plain(stream));
    };
    match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(ClientIo::Tls(Box::new(tls))),
        Ok(Err(error)) => {
            debug!(%peer, %error, "TLS handshake failed");
            None
        }
        Err(_) => {
            debug!(%peer, "TLS handshake deadline passed");
            None
        }
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// A TLS listener for `axum::serve`: a background task accepts TCP connections and runs
/// each TLS handshake in its own task (at most [`MAX_PENDING_HANDSHAKES`] at once, each
/// bounded by a deadline); finished handshakes queue for `accept`. Both kinds of task are
/// spawned through the node's [`TaskTracker`] and end when its shutdown token is cancelled
/// (shutdown then waits for them), or when the listener is dropped.
pub struct TlsListener {
    /// Finished handshakes, with their peers.
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    /// The bound address (the accept task owns the socket).
    local: SocketAddr,
    /// A child of the shutdown token; cancelled on drop, it stops the accept task and
    /// every handshake in progress.
    stop: CancellationToken,
}

impl TlsListener {
    /// Starts accepting on `listener`; the accept task and each handshake are spawned
    /// through `tracker` and stop when `shutdown` is cancelled.
    pub fn new(
        listener: TcpListener,
        acceptor: TlsAcceptor,
        deadline: Duration,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let stop = shutdown.child_token();
        tracker.spawn(accept_loop(
            listener,
            acceptor,
            deadline,
            tx,
            tracker.clone(),
            stop.clone(),
        ));
        Ok(Self { ready, local, stop })
    }
}

/// Accepts TCP connections until `stop` (or until nobody takes finished handshakes) and
/// hands each to its own handshake task, once a handshake slot is free.
async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    deadline: Duration,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    let mut backoff = Duration::from_millis(5);
    loop {
        let slot = tokio::select! {
            _ = stop.cancelled() => return,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tx.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "management accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        backoff = Duration::from_millis(5);
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            let _slot = slot;
            let handshake = async {
                match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send((tls, peer)).await;
                    }
                    Ok(Err(error)) => debug!(%peer, %error, "management TLS handshake failed"),
                    Err(_) => debug!(%peer, "management TLS handshake deadline passed"),
                }
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = handshake => {}
            }
        });
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The accept task ended (shutdown): serve no new connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_acceptor() -> TlsAcceptor {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");
        let files = TlsSettings {
            cert_file: format!("{dir}/cert.pem"),
            key_file: format!("{dir}/key.pem"),
        };
        acceptor("test.tls", &files).unwrap().unwrap()
    }

    /// Starts a listener and a client that connects but never starts its handshake;
    /// returns once the accept task and the handshake task are both tracked.
    async fn stalled_handshake(
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> (TlsListener, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let deadline = Duration::from_secs(60);
        let tls = TlsListener::new(listener, test_acceptor(), deadline, tracker, shutdown).unwrap();
        let silent = TcpStream::connect(tls.local).await.unwrap();
        while tracker.len() < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        (tls, silent)
    }

    #[tokio::test]
    async fn shutdown_ends_the_accept_task_and_pending_handshakes() {
        let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
        let (_tls, _silent) = stalled_handshake(&tracker, &shutdown).await;
        shutdown.cancel();
        tracker.close();
        // Well before the 60 s handshake deadline.
        tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .expect("tracked TLS tasks end on shutdown");
    }

    #[tokio::test]
    async fn dropping_the_listener_ends_its_tasks() {
        let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
        let (tls, _silent) = stalled_handshake(&tracker, &shutdown).await;
        drop(tls);
        tracker.close();
        tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .expect("tracked TLS tasks end when the listener is dropped");
        assert!(
            !shutdown.is_cancelled(),
            "only the listener's own token is cancelled"
        );
    }
}
