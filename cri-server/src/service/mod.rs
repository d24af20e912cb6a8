//! The CRI services. One file per RPC family, as containerd's CRI plugin; what berth does not
//! serve yet answers UNIMPLEMENTED with the reason, never a fake success.

pub mod container;
pub mod image;
pub mod runtime;
pub mod sandbox;
pub mod streaming;

use tonic::Status;

/// The answer of an RPC that is not served yet.
pub(crate) fn not_yet(rpc: &str, why: &str) -> Status {
    Status::unimplemented(format!("berth: {rpc} is not implemented yet: {why}"))
}
