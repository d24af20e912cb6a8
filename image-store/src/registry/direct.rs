//! berth's own HTTP client of the distribution API, for hosts whose hosts.toml settings
//! oci-client has no hook for: a TLS client identity (`client`), extra request headers
//! (`header`), and an API root under a path (`override_path`, or a URL path). It speaks just
//! what a pull needs: manifests by tag or digest, blobs (with a byte range to resume), and the
//! auth flows (Basic, or a Bearer token from the challenge's realm for the repository's pull
//! scope, answered anonymously or with Basic credentials).

use std::io;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, RANGE};
use reqwest::{Response, StatusCode, Url};
use serde::Deserialize;
use tracing::debug;

use super::client::BlobStream;
use super::{tls_cause, Credentials, RegistryConfig, RegistryError};
use crate::hosts::{HostsError, RegistryHost, Scheme};

/// Longest body read from an error answer or a token endpoint.
const MAX_SMALL_BODY: usize = 1 << 20;

/// One host reached with berth's own client.
pub(crate) struct DirectClient {
    http: reqwest::Client,
    /// The API root, no trailing slash (`https://host/path/v2`, or the path itself with
    /// `override_path`).
    root: String,
    /// For messages.
    url: String,
    /// `ns=<registry>` on every request to a host that is not the registry's own (mirrors), as
    /// containerd sends it.
    ns: Option<String>,
    creds: Credentials,
    /// The Authorization value that last worked (or the request's bearer token).
    auth: tokio::sync::Mutex<Option<HeaderValue>>,
}

fn read_file(p: &std::path::Path) -> Result<Vec<u8>, HostsError> {
    std::fs::read(p).map_err(|source| HostsError::Io {
        path: p.to_owned(),
        source,
    })
}

/// The API root of `h`, as containerd computes it: the host's path, with `/v2` appended
/// unless `override_path` is set or the path already ends with it.
pub(crate) fn api_root(h: &RegistryHost) -> String {
    let base = h.url();
    if h.override_path || h.path.ends_with("/v2") {
        base
    } else {
        format!("{base}/v2")
    }
}

impl DirectClient {
    /// A client for `h` with its CAs, client identity, headers and `skip_verify`.
    pub(crate) fn new(
        config: &RegistryConfig,
        h: &RegistryHost,
        registry: &str,
        creds: Credentials,
    ) -> Result<Self, RegistryError> {
        let url = h.url();
        let setup = |reason: String| RegistryError::Setup {
            host: url.clone(),
            reason,
        };
        let mut b = reqwest::Client::builder()
            .user_agent("berth/0.1")
            .connect_timeout(config.connect_timeout.unwrap_or(Duration::from_secs(30)))
            .read_timeout(config.read_timeout.unwrap_or(Duration::from_secs(60)))
            .tls_danger_accept_invalid_certs(h.skip_verify)
            .no_proxy();
        let mut cas = Vec::new();
        for ca in &h.ca {
            let pem = read_file(ca)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| setup(format!("ca {}: {e}", ca.display())))?;
            cas.extend(certs);
        }
        // Plain HTTP needs no roots; without system roots, only the configured ones (reqwest
        // would otherwise fail to build the client, for plain HTTP too).
        if h.scheme == Scheme::Http || !super::trust_store::system_roots() {
            if h.scheme == Scheme::Https && cas.is_empty() && !h.skip_verify {
                return Err(setup(
                    "this host has no CA certificates (install ca-certificates) and hosts.toml \
                     gives this registry no `ca`: cannot verify it over HTTPS"
                        .into(),
                ));
            }
            b = b.tls_certs_only(cas);
        } else {
            b = b.tls_certs_merge(cas);
        }
        // One identity per connection: the first pair (containerd offers all of them and Go
        // picks the first the server's CA list accepts; one pair is the common case).
        if let Some((cert, key)) = h.client.first() {
            let mut pem = read_file(cert)?;
            if let Some(key) = key {
                pem.push(b'\n');
                pem.extend_from_slice(&read_file(key)?);
            }
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                setup(format!(
                    "client certificate {}: {}",
                    cert.display(),
                    super::causes(&e)
                ))
            })?;
            b = b.identity(id);
            if h.client.len() > 1 {
                debug!(host = %url, "several client certificates configured; using the first");
            }
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &h.header {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| setup(format!("header {name:?}: {e}")))?;
            let v = HeaderValue::from_str(value)
                .map_err(|e| setup(format!("header {name:?} value: {e}")))?;
            headers.append(n, v);
        }
        b = b.default_headers(headers);
        let http = b.build().map_err(|e| setup(super::causes(&e)))?;
        let own = RegistryHost::default_server(registry, false).host == h.host;
        let bearer = match &creds {
            Credentials::Bearer(t) => HeaderValue::from_str(&format!("Bearer {t}")).ok(),
            _ => None,
        };
        Ok(DirectClient {
            http,
            root: api_root(h),
            url,
            ns: (!own).then(|| registry.to_owned()),
            creds,
            auth: tokio::sync::Mutex::new(bearer),
        })
    }

    fn endpoint(&self, repository: &str, kind: &str, reference: &str) -> Result<Url, String> {
        let mut u = Url::parse(&format!("{}/{repository}/{kind}/{reference}", self.root))
            .map_err(|e| format!("bad URL: {e}"))?;
        if let Some(ns) = &self.ns {
            u.query_pairs_mut().append_pair("ns", ns);
        }
        Ok(u)
    }

    fn http_err(&self, what: &str, e: reqwest::Error) -> RegistryError {
        if let Some(cause) = tls_cause(&e) {
            return RegistryError::Tls {
                what: what.to_owned(),
                host: self.url.clone(),
                cause,
            };
        }
        RegistryError::Http {
            what: what.to_owned(),
            source: e,
        }
    }

    /// GET `url` with `headers`, answering one auth challenge.
    async fn get(
        &self,
        what: &str,
        repository: &str,
        url: Url,
        headers: HeaderMap,
    ) -> Result<Response, RegistryError> {
        let send = |auth: Option<HeaderValue>| {
            let mut r = self.http.get(url.clone()).headers(headers.clone());
            if let Some(a) = auth {
                r = r.header(AUTHORIZATION, a);
            }
            r.send()
        };
        let cached = self.auth.lock().await.clone();
        let resp = send(cached.clone())
            .await
            .map_err(|e| self.http_err(what, e))?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return check(what, resp).await;
        }
        let Some(challenge) = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
        else {
            return check(what, resp).await;
        };
        let Some(fresh) = self.authorize(what, repository, &challenge).await? else {
            return check(what, resp).await;
        };
        if cached.as_ref() == Some(&fresh) {
            return check(what, resp).await;
        }
        *self.auth.lock().await = Some(fresh.clone());
        let resp = send(Some(fresh))
            .await
            .map_err(|e| self.http_err(what, e))?;
        check(what, resp).await
    }

    /// The Authorization value answering `challenge`, if the credentials can answer it.
    async fn authorize(
        &self,
        what: &str,
        repository: &str,
        challenge: &str,
    ) -> Result<Option<HeaderValue>, RegistryError> {
        let (scheme, params) = parse_challenge(challenge);
        let basic = match &self.creds {
            Credentials::Basic { username, password } => Some((username, password)),
            _ => None,
        };
        if scheme.eq_ignore_ascii_case("basic") {
            let Some((u, p)) = basic else { return Ok(None) };
            use base64::Engine;
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            return Ok(HeaderValue::from_str(&format!("Basic {token}")).ok());
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Ok(None);
        }
        let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let Some(realm) = param("realm") else {
            return Ok(None);
        };
        let mut u = Url::parse(realm).map_err(|e| RegistryError::Setup {
            host: self.url.clone(),
            reason: format!("token realm {realm:?}: {e}"),
        })?;
        {
            let mut q = u.query_pairs_mut();
            if let Some(s) = param("service") {
                q.append_pair("service", s);
            }
            let scope = format!("repository:{repository}:pull");
            q.append_pair("scope", param("scope").unwrap_or(&scope));
        }
        let mut r = self.http.get(u);
        if let Some((user, pass)) = basic {
            r = r.basic_auth(user, Some(pass));
        }
        let token_what = format!("{what}: token from {realm}");
        let resp = r.send().await.map_err(|e| self.http_err(&token_what, e))?;
        let resp = check(&token_what, resp).await?;
        let body = small_body(resp).await;
        #[derive(Deserialize)]
        struct Token {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
        }
        let t: Token = serde_json::from_slice(&body).map_err(|e| RegistryError::Setup {
            host: self.url.clone(),
            reason: format!("token from {realm}: {e}"),
        })?;
        let t = if t.token.is_empty() {
            t.access_token
        } else {
            t.token
        };
        debug!(host = %self.url, realm, "bearer token obtained");
        Ok(HeaderValue::from_str(&format!("Bearer {t}")).ok())
    }

    /// The manifest `reference` (a tag or a digest) of `repository`, at most `max` bytes.
    pub(crate) async fn manifest(
        &self,
        what: &str,
        repository: &str,
        reference: &str,
        accept: &[&str],
        max: usize,
    ) -> Result<Vec<u8>, RegistryError> {
        let url = self
            .endpoint(repository, "manifests", reference)
            .map_err(|reason| RegistryError::Setup {
                host: self.url.clone(),
                reason,
            })?;
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&accept.join(", ")) {
            h.insert(ACCEPT, v);
        }
        let mut resp = self.get(what, repository, url, h).await?;
        let mut out = Vec::new();
        // Bounded by `max`.
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.http_err(what, e))? {
            out.extend_from_slice(&chunk);
            if out.len() > max {
                return Err(RegistryError::TooLarge {
                    reference: format!("{repository}:{reference}"),
                    size: out.len(),
                    max,
                });
            }
        }
        Ok(out)
    }

    /// Blob `digest` of `repository` from byte `offset`: the stream, where it really starts,
    /// and the announced length.
    pub(crate) async fn blob(
        &self,
        what: &str,
        repository: &str,
        digest: &str,
        offset: u64,
    ) -> Result<(BlobStream, u64, Option<u64>), RegistryError> {
        let url = self
            .endpoint(repository, "blobs", digest)
            .map_err(|reason| RegistryError::Setup {
                host: self.url.clone(),
                reason,
            })?;
        let mut h = HeaderMap::new();
        if offset > 0 {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes={offset}-")) {
                h.insert(RANGE, v);
            }
        }
        let resp = self.get(what, repository, url, h).await?;
        let start = if resp.status() == StatusCode::PARTIAL_CONTENT {
            offset
        } else {
            0
        };
        let len = resp.content_length();
        let stream = resp.bytes_stream().map(|r| r.map_err(io::Error::other));
        Ok((Box::pin(stream), start, len))
    }
}

/// `resp` when it succeeded; its status (and the registry's error code, if it sent one) as an
/// error otherwise.
async fn check(what: &str, resp: Response) -> Result<Response, RegistryError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = small_body(resp).await;
    #[derive(Deserialize)]
    struct Envelope {
        #[serde(default)]
        errors: Vec<ErrorEntry>,
    }
    #[derive(Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let (code, message) = match serde_json::from_slice::<Envelope>(&body) {
        Ok(env) if !env.errors.is_empty() => (
            Some(env.errors[0].code.clone()),
            env.errors
                .iter()
                .map(|e| format!("{}: {}", e.code, e.message))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        _ => (
            None,
            String::from_utf8_lossy(&body[..body.len().min(200)])
                .trim()
                .to_owned(),
        ),
    };
    Err(RegistryError::Status {
        what: what.to_owned(),
        status: status.as_u16(),
        code,
        message,
    })
}

async fn small_body(mut resp: Response) -> Vec<u8> {
    let mut out = Vec::new();
    // Bounded by MAX_SMALL_BODY.
    while let Ok(Some(chunk)) = resp.chunk().await {
        out.extend_from_slice(&chunk);
        if out.len() > MAX_SMALL_BODY {
            break;
        }
    }
    out
}

/// `Bearer realm="…",service="…"` → ("Bearer", [(realm, …), (service, …)]).
fn parse_challenge(h: &str) -> (String, Vec<(String, String)>) {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = Vec::new();
    let mut s = rest.trim();
    // Bounded: every iteration consumes at least one byte of `s`.
    while !s.is_empty() {
        let Some(eq) = s.find('=') else { break };
        let name = s[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        s = &s[eq + 1..];
        let value;
        if let Some(q) = s.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => v.push(c),
                }
            }
            value = v;
            s = &q[end.min(q.len())..];
        } else {
            let end = s.find(',').unwrap_or(s.len());
            value = s[..end].trim().to_owned();
            s = &s[end..];
        }
        s = s.trim_start().trim_start_matches(',').trim_start();
        params.push((name, value));
    }
    (scheme.to_owned(), params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(s, "Bearer");
        assert_eq!(
            p,
            vec![
                ("realm".into(), "https://auth.example/token".into()),
                ("service".into(), "registry.example".into()),
                ("scope".into(), "repository:a/b:pull,push".into()),
            ]
        );
        let (s, p) = parse_challenge(r#"Basic realm="a \"q\" b", charset=UTF-8"#);
        assert_eq!(s, "Basic");
        assert_eq!(
            p,
            vec![
                ("realm".into(), "a \"q\" b".into()),
                ("charset".into(), "UTF-8".into())
            ]
        );
        assert_eq!(parse_challenge("Basic").1, vec![]);
    }

    #[test]
    fn api_roots() {
        let mut h = RegistryHost::default_server("r.example:5000", false);
        assert_eq!(api_root(&h), "https://r.example:5000/v2");
        h.path = "/mirror/v2".into();
        assert_eq!(api_root(&h), "https://r.example:5000/mirror/v2");
        h.path = "/prefix".into();
        assert_eq!(api_root(&h), "https://r.example:5000/prefix/v2");
        h.override_path = true;
        assert_eq!(api_root(&h), "https://r.example:5000/prefix");
    }
}
