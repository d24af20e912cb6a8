//! The HTTP side: listening (plain or TLS), the one-time URLs, routing `/exec/{token}`,
//! `/attach/{token}` and `/portforward/{token}`, and the upgrade handshakes (SPDY/3.1 with
//! `X-Stream-Protocol-Version` negotiation, or WebSocket with `Sec-WebSocket-Protocol`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cri_api::v1::{AttachRequest, ExecRequest, PortForwardRequest};
use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info, warn};

use crate::backend::Backend;
use crate::error::{RequestError, ServeError};
use crate::remotecommand::{self, Action, Options};
use crate::spdy::session::SessionLimits;
use crate::tokens::{Pending, TokenCache};
use crate::{portforward, websocket};

/// Header naming the SPDY sub-protocols a client speaks (one value per header line).
const PROTOCOL_HEADER: &str = "x-stream-protocol-version";
/// Header listing the sub-protocols the server accepts, on a failed negotiation.
const ACCEPTED_HEADER: &str = "x-accepted-stream-protocol-versions";

/// Streaming server settings. [`Config::default`] matches kubelet's defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen; port 0 picks a free one.
    pub addr: SocketAddr,
    /// Serve HTTPS with this rustls configuration (it brings its own crypto provider).
    pub tls: Option<Arc<ServerConfig>>,
    /// How long a URL stays valid (it also works only once).
    pub token_ttl: Duration,
    /// URLs handed out and not yet used, at most.
    pub max_in_flight: usize,
    /// How long a client has to open all of its streams.
    pub stream_creation_timeout: Duration,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// A write to a client that makes no progress for this long closes the connection.
    pub write_timeout: Duration,
    /// SPDY streams open at once on one connection.
    pub max_streams_per_connection: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            token_ttl: Duration::from_secs(60),
            max_in_flight: 1000,
            stream_creation_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(4 * 3600),
            write_timeout: Duration::from_secs(30),
            max_streams_per_connection: 1024,
        }
    }
}

/// Timeouts shared by both transports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) idle_timeout: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) creation_timeout: Duration,
    pub(crate) max_streams: usize,
}

impl Limits {
    fn spdy(&self) -> SessionLimits {
        SessionLimits {
            idle_timeout: self.idle_timeout,
            write_timeout: self.write_timeout,
            max_streams: self.max_streams,
        }
    }
}

struct Shared {
    tokens: TokenCache,
    backend: Arc<dyn Backend>,
    limits: Limits,
}

/// The streaming server: hands out one-time URLs and serves them.
pub struct StreamingServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    base_url: String,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for StreamingServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingServer")
            .field("base_url", &self.base_url)
            .finish()
    }
}

impl Drop for StreamingServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl StreamingServer {
    /// Binds and starts serving. Must run inside a tokio runtime.
    pub async fn bind(config: Config, backend: Arc<dyn Backend>) -> Result<Self, ServeError> {
        let listener = TcpListener::bind(config.addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: config.addr,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: config.addr,
            source,
        })?;
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let base_url = format!("{scheme}://{addr}");
        let shared = Arc::new(Shared {
            tokens: TokenCache::new(config.token_ttl, config.max_in_flight),
            backend,
            limits: Limits {
                idle_timeout: config.idle_timeout,
                write_timeout: config.write_timeout,
                creation_timeout: config.stream_creation_timeout,
                max_streams: config.max_streams_per_connection,
            },
        });
        let tls = config.tls.map(TlsAcceptor::from);
        let accept = tokio::spawn(accept_loop(listener, tls, shared.clone()));
        info!(url = %base_url, "streaming server listening");
        Ok(Self {
            shared,
            addr,
            base_url,
            accept,
        })
    }

    /// The address listened on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port` (or `https://`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// A one-time URL for a CRI Exec (validated as kubelet does).
    pub fn exec_url(&self, req: &ExecRequest) -> Result<String, RequestError> {
        validate_streams(
            &req.container_id,
            req.tty,
            req.stdin,
            req.stdout,
            req.stderr,
        )?;
        self.url("exec", Pending::Exec(req.clone()))
    }

    /// A one-time URL for a CRI Attach.
    pub fn attach_url(&self, req: &AttachRequest) -> Result<String, RequestError> {
        validate_streams(
            &req.container_id,
            req.tty,
            req.stdin,
            req.stdout,
            req.stderr,
        )?;
        self.url("attach", Pending::Attach(req.clone()))
    }

    /// A one-time URL for a CRI PortForward.
    pub fn port_forward_url(&self, req: &PortForwardRequest) -> Result<String, RequestError> {
        if req.pod_sandbox_id.is_empty() {
            return Err(RequestError::MissingSandboxId);
        }
        if let Some(&bad) = req.port.iter().find(|&&p| !(1..=65535).contains(&p)) {
            return Err(RequestError::InvalidPort(bad));
        }
        self.url("portforward", Pending::PortForward(req.clone()))
    }

    fn url(&self, kind: &str, pending: Pending) -> Result<String, RequestError> {
        let token = self.shared.tokens.insert(pending)?;
        Ok(format!("{}/{kind}/{token}", self.base_url))
    }
}

fn validate_streams(
    container: &str,
    tty: bool,
    stdin: bool,
    stdout: bool,
    stderr: bool,
) -> Result<(), RequestError> {
    if container.is_empty() {
        return Err(RequestError::MissingContainerId);
    }
    if tty && stderr {
        return Err(RequestError::TtyWithStderr);
    }
    if !stdin && !stdout && !stderr {
        return Err(RequestError::NoStreams);
    }
    Ok(())
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "streaming server: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_http(tcp, shared).await,
                Some(acceptor) => {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    {
                        Ok(Ok(stream)) => serve_http(stream, shared).await,
                        Ok(Err(e)) => {
                            debug!(%peer, error = %e, "streaming server: TLS handshake failed")
                        }
                        Err(_) => debug!(%peer, "streaming server: TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_http<IO>(io: IO, shared: Arc<Shared>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(route(shared, req)) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    if let Err(e) = conn.await {
        debug!(error = %e, "streaming server: HTTP connection ended with an error");
    }
}

type Resp = Response<Full<Bytes>>;

fn plain(status: StatusCode, body: String) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body + "\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn header_has(headers: &HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn header_list(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

fn route(shared: Arc<Shared>, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_owned();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (kind, token) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !matches!(kind, "exec" | "attach" | "portforward") || token.is_empty() || token.contains('/')
    {
        return plain(StatusCode::NOT_FOUND, format!("404 page not found: {path}"));
    }
    if req.method() != Method::GET && req.method() != Method::POST {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {} not allowed", req.method()),
        );
    }
    let pending = shared.tokens.consume(token);
    let pending = match (kind, pending) {
        ("exec", Some(p @ Pending::Exec(_)))
        | ("attach", Some(p @ Pending::Attach(_)))
        | ("portforward", Some(p @ Pending::PortForward(_))) => p,
        _ => {
            debug!(path = %path, "streaming: unknown, used or expired token");
            return plain(
                StatusCode::NOT_FOUND,
                format!("streaming URL {path} is unknown, expired or already used: a URL works once, within a minute of the CRI call that made it"),
            );
        }
    };
    let is_ws = header_has(req.headers(), CONNECTION, "upgrade")
        && header_has(req.headers(), UPGRADE, "websocket");
    if is_ws {
        upgrade_websocket(shared, req, pending)
    } else {
        upgrade_spdy(shared, req, pending)
    }
}

fn upgrade_spdy(shared: Arc<Shared>, mut req: Request<Incoming>, pending: Pending) -> Resp {
    let supported: &[&str] = match pending {
        Pending::PortForward(_) => &portforward::SPDY_PROTOCOLS,
        _ => &remotecommand::SPDY_PROTOCOLS,
    };
    let requested = header_list(req.headers(), PROTOCOL_HEADER);
    // A client that names no protocol gets the oldest one (kubelet's backward compatibility).
    let chosen = if requested.is_empty() {
        String::new()
    } else if let Some(p) = requested.iter().find(|r| supported.contains(&r.as_str())) {
        p.clone()
    } else {
        let mut resp = plain(
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {requested:?}, server accepts {supported:?}"
            ),
        );
        for s in supported {
            resp.headers_mut()
                .append(ACCEPTED_HEADER, http::HeaderValue::from_static(s));
        }
        return resp;
    };
    if !header_has(req.headers(), CONNECTION, "upgrade")
        || !header_has(req.headers(), UPGRADE, "spdy/3.1")
    {
        return plain(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request: want \"Connection: Upgrade\" and \"Upgrade: SPDY/3.1\" (or a WebSocket upgrade)".into(),
        );
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let limits = shared.limits;
    let backend = shared.backend.clone();
    let protocol = chosen.clone();
    tokio::spawn(async move {
        let io = match on_upgrade.await {
            Ok(up) => TokioIo::new(up),
            Err(e) => {
                debug!(error = %e, "spdy upgrade failed");
                return;
            }
        };
        match pending.into_session() {
            Session::Remote(opts, action) => {
                let version = remotecommand::spdy_version(&protocol);
                remotecommand::serve_spdy(
                    io,
                    version,
                    opts,
                    action,
                    backend,
                    limits.spdy(),
                    limits.creation_timeout,
                )
                .await
            }
            Session::PortForward(pod_sandbox_id) => {
                portforward::serve_spdy(
                    io,
                    pod_sandbox_id,
                    backend,
                    limits.spdy(),
                    limits.creation_timeout,
                )
                .await
            }
        }
    });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(CONNECTION, http::HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, http::HeaderValue::from_static("SPDY/3.1"));
    if let Ok(v) = http::HeaderValue::from_str(&chosen) {
        if !chosen.is_empty() {
            h.insert(PROTOCOL_HEADER, v);
        }
    }
    resp
}

/// What an upgraded connection serves, whatever its transport.
enum Session {
    /// Exec or attach: the streams asked for and what to run.
    Remote(Options, Action),
    /// Port-forward into this pod sandbox.
    PortForward(String),
}

impl Pending {
    fn into_session(self) -> Session {
        let options = |stdin, stdout, stderr, tty| Options {
            stdin,
            stdout,
            stderr,
            tty,
        };
        match self {
            Pending::Exec(r) => Session::Remote(
                options(r.stdin, r.stdout, r.stderr, r.tty),
                Action::Exec {
                    container_id: r.container_id,
                    cmd: r.cmd,
                },
            ),
            Pending::Attach(r) => Session::Remote(
                options(r.stdin, r.stdout, r.stderr, r.tty),
                Action::Attach {
                    container_id: r.container_id,
                },
            ),
            Pending::PortForward(r) => Session::PortForward(r.pod_sandbox_id),
        }
    }
}

/// Ports of a WebSocket port-forward: `?port=` query values, else the CRI request's.
fn query_ports(query: Option<&str>, fallback: &[i32]) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for pair in query.unwrap_or("").split('&') {
        if let Some(v) = pair.strip_prefix("port=") {
            for p in v.split(',') {
                let port: u16 = p
                    .parse()
                    .map_err(|_| format!("unable to parse {p:?} as a port"))?;
                if port == 0 {
                    return Err("port \"0\" must be > 0".into());
                }
                ports.push(port);
            }
        }
    }
    if ports.is_empty() {
        ports = fallback
            .iter()
            .filter_map(|&p| u16::try_from(p).ok())
            .collect();
    }
    if ports.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    if ports.len() > 64 {
        return Err("at most 64 ports per connection".into());
    }
    Ok(ports)
}

fn upgrade_websocket(shared: Arc<Shared>, mut req: Request<Incoming>, pending: Pending) -> Resp {
    let supported: &[websocket::WsProtocol] = match pending {
        Pending::PortForward(_) => &websocket::PORTFORWARD,
        _ => &websocket::REMOTECOMMAND,
    };
    let requested = header_list(req.headers(), SEC_WEBSOCKET_PROTOCOL.as_str());
    let Some(proto) = websocket::negotiate(&requested, supported) else {
        return plain(
            StatusCode::FORBIDDEN,
            websocket::unsupported(&requested, supported),
        );
    };
    let key = req
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().to_vec());
    let version_ok = req
        .headers()
        .get(SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let Some(key) = key.filter(|_| version_ok) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "bad websocket handshake: Sec-WebSocket-Key and Sec-WebSocket-Version: 13 are required"
                .into(),
        );
    };
    let ports = match &pending {
        Pending::PortForward(r) => match query_ports(req.uri().query(), &r.port) {
            Ok(p) => p,
            Err(msg) => return plain(StatusCode::BAD_REQUEST, msg),
        },
        _ => Vec::new(),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let limits = shared.limits;
    let backend = shared.backend.clone();
    tokio::spawn(async move {
        let io = match on_upgrade.await {
            Ok(up) => TokioIo::new(up),
            Err(e) => {
                debug!(error = %e, "websocket upgrade failed");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        match pending.into_session() {
            Session::Remote(opts, action) => {
                websocket::serve_remotecommand(ws, proto, opts, action, backend, limits).await
            }
            Session::PortForward(pod_sandbox_id) => {
                websocket::serve_portforward(ws, proto, pod_sandbox_id, ports, backend, limits)
                    .await
            }
        }
    });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(CONNECTION, http::HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, http::HeaderValue::from_static("websocket"));
    if let Ok(v) = http::HeaderValue::from_str(&derive_accept_key(&key)) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    if !proto.name.is_empty() {
        h.insert(
            SEC_WEBSOCKET_PROTOCOL,
            http::HeaderValue::from_static(proto.name),
        );
    }
    resp
}
