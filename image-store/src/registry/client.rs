//! The registry client of one pull: the registry's hosts (mirrors first, then the server, as
//! hosts.toml lists them), each an `oci-client` client with its own TLS settings and auth —
//! or berth's own HTTP client for hosts with settings oci-client cannot apply (a client
//! certificate, extra headers, an API root under a path) — tried in order until one answers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::stream::BoxStream;
use oci_client::client::{
    BlobResponse, Certificate, CertificateEncoding, ClientConfig, ClientProtocol,
};
use oci_client::secrets::RegistryAuth;
use tracing::{debug, warn};

use super::direct::DirectClient;
use super::{Credentials, RegistryConfig, RegistryError};
use crate::digest::Digest;
use crate::docker_auth::{default_docker_config, docker_credentials_with};
use crate::hosts::{resolve_hosts, Capabilities, HostsError, RegistryHost, Scheme};
use crate::reference::Reference;

const MAX_MANIFEST: usize = 4 << 20;

/// A byte stream of one blob.
pub type BlobStream = BoxStream<'static, Result<bytes::Bytes, std::io::Error>>;

/// How a host is spoken to.
enum Transport {
    /// oci-client, with the pull's auth.
    Oci {
        client: oci_client::Client,
        auth: RegistryAuth,
    },
    /// berth's own client (it holds the credentials).
    Direct(DirectClient),
}

/// One host to ask.
struct Endpoint {
    transport: Transport,
    /// The host to talk to instead of the reference's registry (a mirror or another server);
    /// none → the reference's registry itself.
    host: Option<String>,
    /// For messages: the host's URL.
    url: String,
    caps: Capabilities,
    /// It refused connections earlier in this pull: skipped while other hosts remain.
    down: AtomicBool,
}

impl Endpoint {
    /// The host's URL, or (for the client of every registry) the reference's registry.
    fn name<'a>(&'a self, reference: &'a Reference) -> &'a str {
        if self.url.is_empty() {
            reference.registry()
        } else {
            &self.url
        }
    }
}

/// What makes two oci-client clients interchangeable.
#[derive(PartialEq, Eq)]
struct ClientKey {
    scheme: Scheme,
    skip_verify: bool,
    /// The extra CAs' PEM bytes.
    cas: Vec<Vec<u8>>,
    /// A client keeps the first credentials it was used with for a registry.
    credentials: Credentials,
    connect_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
}

/// oci-client clients kept for reuse (by an [`crate::ImageStore`] across its pulls).
#[derive(Default)]
pub(crate) struct ClientCache(std::sync::Mutex<Vec<(ClientKey, oci_client::Client)>>);

/// At most this many clients are kept; the oldest goes first.
const CLIENT_CACHE_MAX: usize = 16;

impl ClientCache {
    fn get_or_build(
        &self,
        key: ClientKey,
        build: impl FnOnce() -> Result<oci_client::Client, RegistryError>,
    ) -> Result<oci_client::Client, RegistryError> {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = v.iter().find(|(k, _)| *k == key) {
            return Ok(c.clone());
        }
        let c = build()?;
        if v.len() >= CLIENT_CACHE_MAX {
            v.remove(0);
        }
        v.push((key, c.clone()));
        Ok(c)
    }
}

/// A registry client for one pull (one auth).
pub struct RegistryClient {
    registry: String,
    endpoints: Vec<Endpoint>,
}

fn oci_ref(r: &Reference, digest: Option<&Digest>, host: Option<&str>) -> oci_client::Reference {
    let mut o = match (digest.or(r.digest()), r.tag()) {
        (Some(d), _) => oci_client::Reference::with_digest(
            r.registry().to_owned(),
            r.repository().to_owned(),
            d.to_string(),
        ),
        (None, tag) => oci_client::Reference::with_tag(
            r.registry().to_owned(),
            r.repository().to_owned(),
            tag.unwrap_or("latest").to_owned(),
        ),
    };
    if let Some(h) = host {
        o.set_mirror_registry(h.to_owned());
    }
    o
}

fn base_config(config: &RegistryConfig) -> ClientConfig {
    let mut cc = ClientConfig {
        platform_resolver: None,
        connect_timeout: Some(config.connect_timeout.unwrap_or(Duration::from_secs(30))),
        read_timeout: Some(config.read_timeout.unwrap_or(Duration::from_secs(60))),
        ..ClientConfig::default()
    };
    cc.user_agent = "berth/0.1";
    cc
}

/// Whether `h` needs berth's own HTTP client: oci-client has no hook for client
/// certificates, extra headers or an API root other than `/v2`.
fn needs_direct(h: &RegistryHost) -> bool {
    !h.client.is_empty()
        || !h.header.is_empty()
        || h.override_path
        || (!h.path.is_empty() && h.path != "/v2")
}

fn read_cas(h: &RegistryHost) -> Result<Vec<Certificate>, HostsError> {
    h.ca.iter()
        .map(|p| {
            std::fs::read(p)
                .map(|data| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data,
                })
                .map_err(|source| HostsError::Io {
                    path: p.clone(),
                    source,
                })
        })
        .collect()
}

impl RegistryClient {
    /// A client that talks to each reference's own registry, HTTPS except for
    /// `config.insecure_hosts`, ignoring hosts.toml.
    pub fn new(config: &RegistryConfig, credentials: &Credentials) -> Self {
        let mut cc = base_config(config);
        cc.protocol = ClientProtocol::HttpsExcept(config.insecure_hosts.clone());
        RegistryClient {
            registry: String::new(),
            endpoints: vec![Endpoint {
                transport: Transport::Oci {
                    client: oci_client::Client::new(cc),
                    auth: credentials.to_auth(),
                },
                host: None,
                url: String::new(),
                caps: Capabilities::ALL,
                down: AtomicBool::new(false),
            }],
        }
    }

    /// A client for `registry` as configured: its hosts.toml (mirrors, then the server), plain
    /// HTTP for `insecure_hosts`, and `credentials` — or, when anonymous, docker's config.json —
    /// for the server. Mirrors get the config.json credentials of their own host.
    pub fn for_registry(
        config: &RegistryConfig,
        registry: &str,
        credentials: &Credentials,
    ) -> Result<Self, RegistryError> {
        Self::for_registry_cached(config, registry, credentials, &ClientCache::default())
    }

    /// [`RegistryClient::for_registry`], reusing the HTTP clients of `cache` (built by earlier
    /// pulls) for hosts with the same TLS settings and credentials.
    pub(crate) fn for_registry_cached(
        config: &RegistryConfig,
        registry: &str,
        credentials: &Credentials,
        cache: &ClientCache,
    ) -> Result<Self, RegistryError> {
        let plain_http = config.insecure_hosts.iter().any(|h| h == registry);
        let hosts = resolve_hosts(config.config_path.as_deref(), registry, plain_http)?;
        let docker_config = config.docker_config.clone().or_else(default_docker_config);
        let from_docker = |host: &str| -> Credentials {
            let Some(path) = &docker_config else {
                return Credentials::Anonymous;
            };
            match docker_credentials_with(path, host, config.credential_helper_dirs.as_deref()) {
                Ok(c) => c.unwrap_or_default(),
                Err(e) => {
                    warn!(registry = host, error = %e, "ignoring docker config");
                    Credentials::Anonymous
                }
            }
        };
        let mut endpoints = Vec::new();
        for h in &hosts {
            let url = h.url();
            let own_server = RegistryHost::default_server(registry, false).host == h.host;
            let creds = if h.mirror {
                from_docker(&h.host)
            } else if *credentials == Credentials::Anonymous {
                from_docker(registry)
            } else {
                credentials.clone()
            };
            debug!(registry, host = %url, mirror = h.mirror, credentials = ?creds, "registry host");
            let transport = if needs_direct(h) || !super::trust_store::system_roots() {
                debug!(registry, host = %url, "host settings (or a host without CA certificates) need berth's own HTTP client");
                Transport::Direct(DirectClient::new(config, h, registry, creds)?)
            } else {
                // Hosts with the same settings share one client, also across pulls: building
                // one loads the system trust store, which costs more than the rest of the
                // setup together. The CAs' contents are part of the key: a rotated CA file
                // gets a new client.
                let cas = read_cas(h)?;
                let key = ClientKey {
                    scheme: h.scheme,
                    skip_verify: h.skip_verify,
                    cas: cas.iter().map(|c| c.data.clone()).collect(),
                    credentials: creds.clone(),
                    connect_timeout: config.connect_timeout,
                    read_timeout: config.read_timeout,
                };
                let client = cache.get_or_build(key, || {
                    let mut cc = base_config(config);
                    cc.protocol = match h.scheme {
                        Scheme::Http => ClientProtocol::Http,
                        Scheme::Https => ClientProtocol::Https,
                    };
                    cc.accept_invalid_certificates = h.skip_verify;
                    cc.extra_root_certificates = cas;
                    oci_client::Client::try_from(cc).map_err(|source| RegistryError::Client {
                        what: format!("registry {url}: TLS settings"),
                        source: Box::new(source),
                    })
                })?;
                Transport::Oci {
                    client,
                    auth: creds.to_auth(),
                }
            };
            endpoints.push(Endpoint {
                transport,
                host: (!own_server).then(|| h.host.clone()),
                url,
                caps: h.capabilities,
                down: AtomicBool::new(false),
            });
        }
        Ok(RegistryClient {
            registry: registry.to_owned(),
            endpoints,
        })
    }

    /// Runs `f` on each endpoint with capability `cap` in order until one succeeds; returns the
    /// last error when none does.
    async fn each<'a, T, F, Fut>(&'a self, cap: &'static str, mut f: F) -> Result<T, RegistryError>
    where
        F: FnMut(&'a Endpoint) -> Fut,
        Fut: std::future::Future<Output = Result<T, RegistryError>>,
    {
        let able: Vec<&'a Endpoint> = self
            .endpoints
            .iter()
            .filter(|e| match cap {
                "resolve" => e.caps.resolve,
                _ => e.caps.pull,
            })
            .collect();
        let mut last = None;
        for (i, e) in able.iter().enumerate() {
            let is_last = i + 1 == able.len();
            if e.down.load(Ordering::Relaxed) && !is_last {
                continue;
            }
            match f(e).await {
                Ok(v) => return Ok(v),
                Err(err) => {
                    if !is_last {
                        warn!(registry = %self.registry, host = %e.url, error = %err, "registry host failed; trying the next");
                    }
                    // Unreachable, or TLS failed (which fails the same way every time: a
                    // loopback registry speaking plain HTTP answers every ClientHello with
                    // garbage): not asked again this pull.
                    if err.is_connect() || matches!(err, RegistryError::Tls { .. }) {
                        e.down.store(true, Ordering::Relaxed);
                    }
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or_else(|| RegistryError::NoHost {
            registry: self.registry.clone(),
            capability: cap,
        }))
    }

    /// Fetches the manifest or index `reference` points at (by `digest` when given), checks its
    /// digest, and returns its bytes and digest.
    pub async fn manifest(
        &self,
        reference: &Reference,
        digest: Option<&Digest>,
    ) -> Result<(Vec<u8>, Digest), RegistryError> {
        let by_tag = digest.or(reference.digest()).is_none();
        let cap = if by_tag { "resolve" } else { "pull" };
        self.each(cap, |e| Self::manifest_from(e, reference, digest))
            .await
    }

    async fn manifest_from(
        e: &Endpoint,
        reference: &Reference,
        digest: Option<&Digest>,
    ) -> Result<(Vec<u8>, Digest), RegistryError> {
        let r = oci_ref(reference, digest, e.host.as_deref());
        let what = match &e.host {
            Some(_) => format!("manifest {r} from {}", e.url),
            None => format!("manifest {r}"),
        };
        let bytes = match &e.transport {
            Transport::Oci { client, auth } => {
                client
                    .pull_manifest_raw(&r, auth, crate::manifest::ACCEPTED)
                    .await
                    .map_err(|source| RegistryError::from_oci(what, e.name(reference), source))?
                    .0
            }
            Transport::Direct(d) => d
                .manifest(
                    &what,
                    reference.repository(),
                    &digest
                        .or(reference.digest())
                        .map(ToString::to_string)
                        .unwrap_or_else(|| reference.tag().unwrap_or("latest").to_owned()),
                    crate::manifest::ACCEPTED,
                    MAX_MANIFEST,
                )
                .await?
                .into(),
        };
        if bytes.len() > MAX_MANIFEST {
            return Err(RegistryError::TooLarge {
                reference: r.to_string(),
                size: bytes.len(),
                max: MAX_MANIFEST,
            });
        }
        let actual = Digest::sha256_of(&bytes);
        if let Some(expected) = digest.or(reference.digest()) {
            let check = if expected.algorithm() == actual.algorithm() {
                actual.clone()
            } else {
                let mut d = crate::digest::Digester::new(expected.algorithm());
                d.update(&bytes);
                d.finish()
            };
            if &check != expected {
                return Err(RegistryError::ManifestDigest {
                    expected: expected.clone(),
                    actual: check,
                });
            }
            return Ok((bytes.to_vec(), expected.clone()));
        }
        Ok((bytes.to_vec(), actual))
    }

    /// Streams blob `digest` of `reference`'s repository from byte `offset`. Returns the stream,
    /// the offset it really starts at (0 when the registry ignored the range) and the length the
    /// registry announced.
    pub async fn blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        offset: u64,
    ) -> Result<(BlobStream, u64, Option<u64>), RegistryError> {
        self.each("pull", |e| Self::blob_from(e, reference, digest, offset))
            .await
    }

    async fn blob_from(
        e: &Endpoint,
        reference: &Reference,
        digest: &Digest,
        offset: u64,
    ) -> Result<(BlobStream, u64, Option<u64>), RegistryError> {
        let r = oci_ref(reference, Some(digest), e.host.as_deref());
        let d = digest.to_string();
        let what = match &e.host {
            Some(_) => format!("blob {digest} from {}", e.url),
            None => format!("blob {digest}"),
        };
        let (client, auth) = match &e.transport {
            Transport::Oci { client, auth } => (client, auth),
            Transport::Direct(direct) => {
                return direct.blob(&what, reference.repository(), &d, offset).await
            }
        };
        let err = |source| RegistryError::from_oci(what.clone(), e.name(reference), source);
        // Blob requests reuse the token obtained for the manifest; make sure one is stored.
        client
            .store_auth_if_needed(r.resolve_registry(), auth)
            .await;
        if offset == 0 {
            let s = client.pull_blob_stream(&r, d.as_str()).await.map_err(err)?;
            return Ok((s.stream, 0, s.content_length));
        }
        match client
            .pull_blob_stream_partial(&r, d.as_str(), offset, None)
            .await
            .map_err(err)?
        {
            BlobResponse::Full(s) => Ok((s.stream, 0, s.content_length)),
            BlobResponse::Partial(s) => Ok((s.stream, offset, s.content_length)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ca: &[u8], credentials: Credentials) -> ClientKey {
        ClientKey {
            scheme: Scheme::Https,
            skip_verify: false,
            cas: vec![ca.to_vec()],
            credentials,
            connect_timeout: None,
            read_timeout: None,
        }
    }

    #[test]
    fn client_cache_reuses_equal_settings_only_and_is_bounded() {
        let cache = ClientCache::default();
        let mut builds = 0;
        for k in [
            key(b"ca1", Credentials::Anonymous),
            key(b"ca1", Credentials::Anonymous),
            // A rotated CA file, other credentials: new clients.
            key(b"ca2", Credentials::Anonymous),
            key(b"ca1", Credentials::Bearer("t".into())),
        ] {
            cache
                .get_or_build(k, || {
                    builds += 1;
                    Ok(oci_client::Client::default())
                })
                .unwrap();
        }
        assert_eq!(builds, 3);
        for i in 0..40u8 {
            cache
                .get_or_build(key(&[i], Credentials::Anonymous), || {
                    Ok(oci_client::Client::default())
                })
                .unwrap();
        }
        assert_eq!(cache.0.lock().unwrap().len(), CLIENT_CACHE_MAX);
    }
}
