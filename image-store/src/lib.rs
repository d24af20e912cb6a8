//! image-store: content store, registry client, unpack, snapshots, metadata, GC, import/export.
//!
//! Not yet implemented: see issue 3.
