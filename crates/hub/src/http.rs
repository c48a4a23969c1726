//! Serving the API router over TCP, with TLS when the stream port has a certificate.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::api::Peer;
use crate::listener::{Accepted, Gate};

/// Time a client has to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The stream port's reloadable settings.
#[derive(Clone)]
pub(crate) struct StreamSettings {
    /// TLS for viewers, if the stream port speaks it (a reload can rotate the certificate, not
    /// turn TLS on or off).
    pub tls: Option<TlsAcceptor>,
    /// SO_SNDBUF of each connection, if set.
    pub send_buffer: Option<usize>,
}

pub(crate) async fn serve(
    listener: TcpListener,
    gate: Arc<Gate>,
    live: Arc<mediamesh_tunnel::settings::Live<StreamSettings>>,
    router: Router,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let conns = shutdown.clone();
    crate::listener::serve(listener, gate, shutdown, tasks, move |Accepted { tcp, remote, .. }| {
        let settings = live.get();
        if let Some(size) = settings.send_buffer
            && let Err(e) = socket2::SockRef::from(&tcp).set_send_buffer_size(size)
        {
            debug!(%remote, error = %e, "cannot set the send buffer size");
        }
        let router = router.clone().layer(axum::Extension(Peer(remote)));
        let tls = settings.tls.clone();
        let shutdown = conns.clone();
        async move {
            let service = TowerToHyperService::new(router);
            let mut builder = http1::Builder::new();
            builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
            let result = match tls {
                Some(acceptor) => match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        drive(builder.serve_connection(TokioIo::new(stream), service).with_upgrades(), &shutdown).await
                    }
                    Ok(Err(e)) => {
                        debug!(%remote, error = %e, "stream port TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        debug!(%remote, "stream port TLS handshake timed out");
                        return;
                    }
                },
                None => drive(builder.serve_connection(TokioIo::new(tcp), service).with_upgrades(), &shutdown).await,
            };
            if let Err(e) = result {
                debug!(%remote, error = %e, "http connection ended with an error");
            }
        }
    })
    .await;
}

/// Runs a connection; on shutdown lets it finish its current request.
async fn drive<C>(conn: C, shutdown: &CancellationToken) -> Result<(), hyper::Error>
where
    C: std::future::Future<Output = Result<(), hyper::Error>> + GracefulConn,
{
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful();
            conn.await
        }
    }
}

/// Connections that can be asked to finish gracefully.
trait GracefulConn {
    fn graceful(self: std::pin::Pin<&mut Self>);
}

impl<I, S> GracefulConn for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}
