//! One-time tokens: each URL handed out works once, within its time to live.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use cri_api::v1::{AttachRequest, ExecRequest, PortForwardRequest};

use crate::error::RequestError;

/// A request waiting for its client to connect.
#[derive(Debug, Clone)]
pub(crate) enum Pending {
    Exec(ExecRequest),
    Attach(AttachRequest),
    PortForward(PortForwardRequest),
}

/// The tokens handed out and not yet used.
pub(crate) struct TokenCache {
    ttl: Duration,
    max: usize,
    map: Mutex<HashMap<String, (Pending, Instant)>>,
}

impl TokenCache {
    pub(crate) fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Stores a request under a fresh random token.
    pub(crate) fn insert(&self, pending: Pending) -> Result<String, RequestError> {
        let mut raw = [0u8; 16];
        getrandom::getrandom(&mut raw).map_err(RequestError::Entropy)?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (_, expires)| *expires > now);
        if map.len() >= self.max {
            return Err(RequestError::TooManyInFlight { max: self.max });
        }
        map.insert(token.clone(), (pending, now + self.ttl));
        Ok(token)
    }

    /// Takes the request of a token: `None` if unknown, used or expired.
    pub(crate) fn consume(&self, token: &str) -> Option<Pending> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let (pending, expires) = map.remove(token)?;
        (expires > Instant::now()).then_some(pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_works_once_and_expires() {
        let cache = TokenCache::new(Duration::from_millis(50), 2);
        let t = cache
            .insert(Pending::Attach(AttachRequest::default()))
            .unwrap();
        assert!(cache.consume(&t).is_some());
        assert!(cache.consume(&t).is_none());
        let t = cache
            .insert(Pending::Attach(AttachRequest::default()))
            .unwrap();
        std::thread::sleep(Duration::from_millis(80));
        assert!(cache.consume(&t).is_none());
        cache
            .insert(Pending::Attach(AttachRequest::default()))
            .unwrap();
        cache
            .insert(Pending::Attach(AttachRequest::default()))
            .unwrap();
        assert!(matches!(
            cache.insert(Pending::Attach(AttachRequest::default())),
            Err(RequestError::TooManyInFlight { max: 2 })
        ));
    }
}
