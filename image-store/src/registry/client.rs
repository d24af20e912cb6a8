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
        type ClientKey = (Scheme, bool, Vec<std::path::PathBuf>, Credentials);
        let mut built: Vec<(ClientKey, oci_client::Client)> = Vec::new();
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
            let transport = if needs_direct(h) {
                debug!(registry, host = %url, "host settings need berth's own HTTP client");
                Transport::Direct(DirectClient::new(config, h, registry, creds)?)
            } else {
                // Hosts with the same settings share one client: building one loads the system
                // trust store, which costs more than the rest of the setup together.
                let key = (h.scheme, h.skip_verify, h.ca.clone(), creds.clone());
                let client = match built.iter().find(|(k, _)| *k == key) {
                    Some((_, c)) => c.clone(),
                    None => {
                        let mut cc = base_config(config);
                        cc.protocol = match h.scheme {
                            Scheme::Http => ClientProtocol::Http,
                            Scheme::Https => ClientProtocol::Https,
                        };
                        cc.accept_invalid_certificates = h.skip_verify;
                        cc.extra_root_certificates = read_cas(h)?;
                        let c = oci_client::Client::try_from(cc).map_err(|source| {
                            RegistryError::Client {
                                what: format!("registry {url}: TLS settings"),
                                source: Box::new(source),
                            }
                        })?;
                        built.push((key, c.clone()));
                        c
                    }
                };
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
                    if err.is_connect() {
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
