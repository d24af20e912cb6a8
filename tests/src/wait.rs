//! Bounded polling: every wait in the tests has a limit in time and in tries.

use std::time::{Duration, Instant};

/// Polls `f` every `every` until it returns Some, at most `limit` long (and at most
/// limit/every + 1 tries). Returns None when the limit is reached.
pub fn poll<T>(limit: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    let max_tries = (limit.as_millis() / every.as_millis().max(1)) as usize + 1;
    for _ in 0..max_tries {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(every);
    }
    None
}

/// Polls `cond` every 20 ms for up to `limit`; panics with `what` when it never holds.
#[track_caller]
pub fn until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    if poll(limit, Duration::from_millis(20), || cond().then_some(())).is_none() {
        panic!("timed out after {limit:?} waiting for {what}");
    }
}
