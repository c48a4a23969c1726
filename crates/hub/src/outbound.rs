//! Requests the hub makes itself: fetching a JWKS and asking the auth hook. One HTTP/1.1
//! request per connection (these are rare and small), over TLS for `https`, with a deadline
//! for the whole exchange and a cap on the answer's size.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use tokio::net::TcpStream;

/// Why a request failed. The text names the URL without its query or credentials.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// The URL cannot be requested.
    #[error("bad URL: {0}")]
    Url(&'static str),
    /// The CA bundle cannot be read.
    #[error("{0}")]
    Tls(#[from] mediamesh_tls::TlsError),
    /// Connecting failed.
    #[error("cannot connect to {host}: {source}")]
    Connect {
        /// `host:port`.
        host: String,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("HTTP error from {host}: {reason}")]
    Http {
        /// `host:port`.
        host: String,
        /// What failed.
        reason: String,
    },
    /// The answer is larger than allowed.
    #[error("the answer from {host} is larger than {limit} bytes")]
    TooLarge {
        /// `host:port`.
        host: String,
        /// The cap.
        limit: usize,
    },
    /// No complete answer in time.
    #[error("no answer from {host} within {} s", .after.as_secs_f64())]
    Timeout {
        /// `host:port`.
        host: String,
        /// The deadline.
        after: Duration,
    },
}

/// Where requests go: a parsed URL and, for `https`, the TLS settings.
#[derive(Debug, Clone)]
pub struct Target {
    uri: Uri,
    host: String,
    port: u16,
    /// The name the server's certificate must carry (the host, unless given).
    tls_name: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// The system's CA bundle (Debian's path).
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

impl Target {
    /// `url` (http or https), trusting `ca_file` or the system's CA bundle for https.
    pub fn new(url: &str, ca_file: Option<&std::path::Path>) -> Result<Self, OutboundError> {
        let uri: Uri = url.parse().map_err(|_| OutboundError::Url("not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(OutboundError::Url("must be http:// or https://")),
        };
        let host = uri.host().ok_or(OutboundError::Url("no host"))?.to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let roots: RootCertStore =
                mediamesh_tls::load_roots(ca_file.unwrap_or(std::path::Path::new(SYSTEM_BUNDLE)))?;
            Some(mediamesh_tls::viewer_client_config(roots)?)
        } else {
            None
        };
        Ok(Self { uri, tls_name: host.clone(), host, port, tls })
    }

    /// `https` to `authority` (`host:port`) at `path`, with `tls` (the edge's enrollment and
    /// renewal), checking the server's certificate for `tls_name` (default: the host).
    pub fn with_tls(
        authority: &str,
        path: &str,
        tls: Arc<rustls::ClientConfig>,
        tls_name: Option<&str>,
    ) -> Result<Self, OutboundError> {
        let uri: Uri = format!("https://{authority}{path}").parse().map_err(|_| OutboundError::Url("not host:port"))?;
        let host = uri.host().ok_or(OutboundError::Url("no host"))?.to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let tls_name = tls_name.map_or_else(|| host.clone(), str::to_owned);
        Ok(Self { uri, host, port, tls_name, tls: Some(tls) })
    }

    fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Sends `method` with `body` (JSON when given) and returns the status and up to `limit`
    /// bytes of answer, all within `timeout`.
    pub async fn send(
        &self,
        method: Method,
        body: Option<Vec<u8>>,
        limit: usize,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), OutboundError> {
        let host = self.authority();
        tokio::time::timeout(timeout, self.exchange(method, body, limit))
            .await
            .map_err(|_| OutboundError::Timeout { host, after: timeout })?
    }

    async fn exchange(
        &self,
        method: Method,
        body: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<(StatusCode, Bytes), OutboundError> {
        let host = self.authority();
        let http = |reason: String| OutboundError::Http { host: host.clone(), reason };
        let tcp = TcpStream::connect((self.host.trim_matches(['[', ']']), self.port))
            .await
            .map_err(|source| OutboundError::Connect { host: host.clone(), source })?;
        let _ = tcp.set_nodelay(true);
        let path = self.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &host)
            .header(http::header::USER_AGENT, concat!("mediamesh/", env!("CARGO_PKG_VERSION")))
            .header(http::header::ACCEPT, "application/json");
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|e| http(e.to_string()))?;
        match &self.tls {
            Some(cfg) => {
                let name = rustls::pki_types::ServerName::try_from(self.tls_name.trim_matches(['[', ']']).to_owned())
                    .map_err(|_| OutboundError::Url("the host is not a valid TLS name"))?;
                let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|source| OutboundError::Connect { host: host.clone(), source })?;
                exchange_on(TokioIo::new(tls), req, limit, &host).await
            }
            None => exchange_on(TokioIo::new(tcp), req, limit, &host).await,
        }
    }
}

/// One request and its whole answer on `io`. The connection is driven in this future, not a
/// task of its own, so a deadline on the caller ends all of it.
async fn exchange_on<T>(
    io: TokioIo<T>,
    req: Request<Full<Bytes>>,
    limit: usize,
    host: &str,
) -> Result<(StatusCode, Bytes), OutboundError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let http = |reason: String| OutboundError::Http { host: host.to_owned(), reason };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| http(e.to_string()))?;
    let work = async {
        let response = sender.send_request(req).await.map_err(|e| http(e.to_string()))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), limit).collect().await.map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                OutboundError::TooLarge { host: host.to_owned(), limit }
            } else {
                http(e.to_string())
            }
        })?;
        Ok((status, body.to_bytes()))
    };
    let mut work = std::pin::pin!(work);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        biased;
        r = &mut work => r,
        // The connection ended (closed after the answer, or failed): the exchange completes
        // or fails on its own.
        _ = &mut conn => work.await,
    }
}
