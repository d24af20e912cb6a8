//! berth's own admin service (`berth.admin.v1`), served on the CRI socket beside the CRI:
//! image operations the CRI has no call for — tag, export and import of archives — over the
//! image store's own functions. The berth CLI is its client.

mod images;
mod pull_stream;

/// The generated messages and server of `proto/berth/admin/v1/images.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("berth.admin.v1");
}

pub use images::AdminImages;
