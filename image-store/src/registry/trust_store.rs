//! Whether this host has a system trust store (the CA certificates HTTPS registries are
//! verified against). A host without one (Debian without `ca-certificates`, a minimal node
//! image) must still pull from plain-HTTP registries and from HTTPS registries whose CA its
//! hosts.toml gives, and must say clearly why any other HTTPS pull fails. oci-client cannot be
//! used there: building one builds a default reqwest client, which panics without system
//! roots ("No CA certificates were loaded from the system"). So where this says no, every
//! host goes through berth's own client, built with only the roots hosts.toml configures.

use std::sync::atomic::{AtomicBool, Ordering};

/// Found once: the trust store is not uninstalled under a running berthd.
static FOUND: AtomicBool = AtomicBool::new(false);

/// Whether the system trust store holds at least one certificate. Read from disk until one
/// is found (cheap when the store is empty or missing), then remembered.
pub(crate) fn system_roots() -> bool {
    if FOUND.load(Ordering::Relaxed) {
        return true;
    }
    let found = !rustls_native_certs::load_native_certs().certs.is_empty();
    if found {
        FOUND.store(true, Ordering::Relaxed);
    }
    found
}
