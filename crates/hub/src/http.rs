//! Serving the API router over TCP, with TLS when the stream port has a certificate.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::api::Peer;
use crate::listener::{Accepted, Deadline, Gate};

/// The largest request head (request line and headers) the stream port reads: room for a long
/// token and cookies, not for a client that sends headers forever.
pub(crate) const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// Most header lines in one request.
pub(crate) const MAX_HEADERS: usize = 64;
/// The largest request body on any route (the API's writes carry none or little).
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// Requests one HTTP/2 connection may have open at once (an LL-HLS client holds a few: a
/// blocking playlist reload and preload-hinted parts per rendition).
const MAX_H2_STREAMS: u32 = 100;

/// The stream port's reloadable settings.
#[derive(Clone)]
pub(crate) struct StreamSettings {
    /// TLS for viewers, if the stream port speaks it (a reload can rotate the certificate, not
    /// turn TLS on or off).
    pub tls: Option<TlsAcceptor>,
    /// SO_SNDBUF of each connection, if set.
    pub send_buffer: Option<usize>,
    /// Time a client has for the TLS handshake (`handshakeTimeout`).
    pub handshake_timeout: Duration,
    /// Time a client has to send each request's header (`requestTimeout`).
    pub request_timeout: Duration,
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
    crate::listener::serve(listener, gate, shutdown, tasks, move |Accepted { tcp, remote, gate, .. }| {
        let settings = live.get();
        if let Some(size) = settings.send_buffer
            && let Err(e) = socket2::SockRef::from(&tcp).set_send_buffer_size(size)
        {
            debug!(%remote, error = %e, "cannot set the send buffer size");
        }
        let router = router.clone().layer(axum::Extension(Peer(remote)));
        let shutdown = conns.clone();
        async move {
            let service = TowerToHyperService::new(router);
            let mut builder = http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(settings.request_timeout)
                // A request's head (line and headers) beyond this is answered 431 and closed.
                .max_buf_size(MAX_REQUEST_HEAD)
                .max_headers(MAX_HEADERS);
            let result = match settings.tls.clone() {
                Some(acceptor) => match tokio::time::timeout(settings.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) if stream.get_ref().1.alpn_protocol() == Some(mediamesh_tls::ALPN_H2) => {
                        let mut h2 = http2::Builder::new(TokioExecutor::new());
                        h2.timer(hyper_util::rt::TokioTimer::new())
                            .max_header_list_size(MAX_REQUEST_HEAD as u32)
                            .max_concurrent_streams(MAX_H2_STREAMS);
                        drive(h2.serve_connection(TokioIo::new(stream), service), &shutdown).await
                    }
                    Ok(Ok(stream)) => {
                        drive(builder.serve_connection(TokioIo::new(stream), service).with_upgrades(), &shutdown).await
                    }
                    Ok(Err(e)) => {
                        debug!(%remote, error = %e, "stream port TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        gate.counters.missed(Deadline::Handshake);
                        debug!(%remote, "stream port TLS handshake timed out");
                        return;
                    }
                },
                None => drive(builder.serve_connection(TokioIo::new(tcp), service).with_upgrades(), &shutdown).await,
            };
            match result {
                Err(e) if e.is_timeout() => {
                    gate.counters.missed(Deadline::Request);
                    debug!(%remote, "no complete request header within requestTimeout");
                }
                Err(e) => debug!(%remote, error = %e, "http connection ended with an error"),
                Ok(()) => {}
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

impl<I, S> GracefulConn for hyper::server::conn::http2::Connection<I, S, TokioExecutor>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
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
