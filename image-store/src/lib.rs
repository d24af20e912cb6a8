//! image-store: content store, registry client, unpack, snapshots, metadata, GC, import/export.
//!
//! The public entry point is [`ImageStore`]; the typed building blocks (digests, references,
//! chain IDs) are usable on their own.

pub mod chain_id;
pub mod content;
mod cred_helper;
pub mod digest;
pub mod docker_auth;
mod export;
mod gc;
pub mod hosts;
mod import;
pub mod layer_fetch;
pub mod manifest;
pub mod metadata;
pub mod mount;
pub mod platform;
mod pull;
pub mod pull_progress;
pub mod reference;
pub mod registry;
pub mod snapshot;
mod store;
pub mod unpack;

pub use chain_id::ChainId;
pub use content::{ContentError, ContentStore};
pub use cred_helper::HelperError;
pub use digest::{Algorithm, Digest, DigestError};
pub use docker_auth::DockerConfigError;
pub use export::ExportError;
pub use gc::{GcFailure, GcReport, RemoveError};
pub use hosts::{HostsError, RegistryHost};
pub use import::{ImportError, ImportOptions};
pub use layer_fetch::LayerError;
pub use manifest::{ImageConfig, ManifestError};
pub use metadata::{ImageRecord, MetadataError, MetadataStore, SnapshotKind, SnapshotRecord};
pub use mount::{unmount, Mount, MountError};
pub use platform::Platform;
pub use pull::{PullError, PullOptions};
pub use pull_progress::{LayerEvent, PullProgress};
pub use reference::{Reference, ReferenceError};
pub use registry::{Credentials, RegistryConfig, RegistryError, RegistryFailure};
pub use snapshot::{LayerDir, SnapshotError, Snapshotter, SnapshotterMode, Usage};
pub use store::{Image, ImageStore, StoreConfig, StoreError};
pub use unpack::{unpack_layer, Compression, UnpackError, UnpackOptions, Unpacked};
