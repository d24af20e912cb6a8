//! image-store: content store, registry client, unpack, snapshots, metadata, GC, import/export.
//!
//! The public entry point is [`ImageStore`]; the typed building blocks (digests, references,
//! chain IDs) are usable on their own.

pub mod chain_id;
pub mod content;
pub mod digest;
pub mod metadata;
pub mod mount;
pub mod platform;
pub mod reference;
pub mod snapshot;
pub mod unpack;

pub use chain_id::ChainId;
pub use content::{ContentError, ContentStore};
pub use digest::{Algorithm, Digest, DigestError};
pub use metadata::{ImageRecord, MetadataError, MetadataStore, SnapshotKind, SnapshotRecord};
pub use mount::{unmount, Mount, MountError};
pub use platform::Platform;
pub use reference::{Reference, ReferenceError};
pub use snapshot::{LayerDir, SnapshotError, Snapshotter, Usage};
pub use unpack::{unpack_layer, Compression, UnpackError, UnpackOptions, Unpacked};
