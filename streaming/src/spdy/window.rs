//! Send-side flow control of SPDY/3.1: a window per stream and one for the session.
//!
//! Go's spdystream (kubectl, crictl, kubelet) neither sends WINDOW_UPDATE nor honours it, so a
//! window is only enforced once the peer shows it does flow control (it sent a WINDOW_UPDATE or
//! a SETTINGS_INITIAL_WINDOW_SIZE). Until then the windows are counted but never waited on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

/// The default SPDY/3.1 window, for streams and for the session.
pub(crate) const DEFAULT_WINDOW: i64 = 64 * 1024;

/// One flow-control window.
#[derive(Debug)]
pub(crate) struct Window {
    credit: Mutex<i64>,
    closed: AtomicBool,
    changed: Notify,
}

impl Window {
    pub(crate) fn new(initial: i64) -> Self {
        Self {
            credit: Mutex::new(initial),
            closed: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, i64> {
        self.credit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds credit (negative after a SETTINGS that shrinks the initial window).
    pub(crate) fn add(&self, delta: i64) {
        *self.lock() += delta;
        self.changed.notify_waiters();
    }

    /// Wakes every waiter for good (stream reset, session gone).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Takes up to `want` bytes of credit, waiting while there is none if `enforce` is set.
    /// Returns `None` once the window is closed.
    pub(crate) async fn take(&self, want: usize, enforce: &AtomicBool) -> Option<usize> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.closed.load(Ordering::SeqCst) {
                return None;
            }
            {
                let mut credit = self.lock();
                if !enforce.load(Ordering::SeqCst) {
                    *credit -= want as i64;
                    return Some(want);
                }
                if *credit > 0 {
                    let n = want.min(*credit as usize);
                    *credit -= n as i64;
                    return Some(n);
                }
            }
            changed.await;
        }
    }

    /// Gives back credit taken but not used.
    pub(crate) fn refund(&self, n: usize) {
        self.add(n as i64);
    }
}
