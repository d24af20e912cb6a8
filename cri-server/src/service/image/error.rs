//! ImageService errors and the one place they become gRPC status codes.

use image_store::{
    ContentError, LayerError, ManifestError, PullError, ReferenceError, RegistryError,
    RegistryFailure, RemoveError, StoreError,
};
use tonic::{Code, Status};

/// Why an ImageService RPC failed; every message names the image.
#[derive(Debug, thiserror::Error)]
pub enum ImageServiceError {
    /// The request carries no image.
    #[error("{rpc}: no image given (ImageSpec.image is empty)")]
    NoImage {
        /// The RPC.
        rpc: &'static str,
    },
    /// The ImageSpec names a RuntimeClass handler berthd does not have.
    #[error("pull {image}: unknown runtime handler {handler:?}")]
    UnknownHandler {
        /// The image asked for.
        image: String,
        /// The handler named.
        handler: String,
    },
    /// The image is not a valid reference.
    #[error("pull {image}: {source}")]
    BadReference {
        /// The image asked for.
        image: String,
        /// Why it does not parse.
        source: ReferenceError,
    },
    /// The AuthConfig cannot be used.
    #[error("pull {image}: auth config: {reason}")]
    BadAuth {
        /// The image asked for.
        image: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The pull failed (the message starts with `pull <reference>:`).
    #[error(transparent)]
    Pull(Box<PullError>),
    /// Reading the store failed.
    #[error("image {image}: {source}")]
    Store {
        /// The image (or `*` for every image).
        image: String,
        /// The cause.
        source: StoreError,
    },
    /// Removing an image record failed (the message starts with `remove image <name>:`).
    #[error(transparent)]
    Remove(RemoveError),
    /// A blocking task panicked or was cancelled.
    #[error("{what}: worker task failed: {source}")]
    Task {
        /// What the task was doing.
        what: &'static str,
        /// The cause.
        source: tokio::task::JoinError,
    },
}

impl ImageServiceError {
    /// The gRPC code of this error.
    pub fn code(&self) -> Code {
        match self {
            ImageServiceError::NoImage { .. }
            | ImageServiceError::UnknownHandler { .. }
            | ImageServiceError::BadReference { .. }
            | ImageServiceError::BadAuth { .. } => Code::InvalidArgument,
            ImageServiceError::Pull(e) => pull_code(e),
            ImageServiceError::Store { .. }
            | ImageServiceError::Remove(_)
            | ImageServiceError::Task { .. } => Code::Internal,
        }
    }
}

impl From<ImageServiceError> for Status {
    fn from(e: ImageServiceError) -> Status {
        Status::new(e.code(), message(&e))
    }
}

/// The error's message followed by every cause it does not already quote (an HTTP client's
/// "error sending request" hides "Connection refused" in its sources).
fn message(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cause = c.source();
    }
    msg
}

fn pull_code(e: &PullError) -> Code {
    match e {
        PullError::Registry { source, .. } => registry_code(source),
        PullError::Manifest { source, .. } => match source {
            ManifestError::NoPlatform { .. } => Code::NotFound,
            ManifestError::Json { .. } => Code::Unknown,
            _ => Code::FailedPrecondition,
        },
        PullError::Config { source, .. } | PullError::Layer { source, .. } => layer_code(source),
        PullError::DiffId { .. } => Code::DataLoss,
        PullError::Content { .. } | PullError::Snapshot { .. } | PullError::Metadata { .. } => {
            Code::Internal
        }
    }
}

fn registry_code(e: &RegistryError) -> Code {
    match e.failure() {
        RegistryFailure::NotFound => Code::NotFound,
        RegistryFailure::Unauthorized => Code::Unauthenticated,
        RegistryFailure::Denied => Code::PermissionDenied,
        RegistryFailure::Unavailable => Code::Unavailable,
        RegistryFailure::Other => match e {
            RegistryError::ManifestDigest { .. } => Code::DataLoss,
            RegistryError::TooLarge { .. } => Code::FailedPrecondition,
            _ => Code::Unknown,
        },
    }
}

fn layer_code(e: &LayerError) -> Code {
    match e {
        LayerError::Registry(r) => registry_code(r),
        LayerError::Stream(_) | LayerError::BusyTimeout(_) => Code::Unavailable,
        LayerError::Content(ContentError::DigestMismatch { .. })
        | LayerError::Content(ContentError::SizeMismatch { .. }) => Code::DataLoss,
        LayerError::Unpack(_) => Code::FailedPrecondition,
        _ => Code::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn messages_carry_hidden_causes_once() {
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(message(&e), "outer: connection refused");
        let e = ImageServiceError::NoImage { rpc: "PullImage" };
        assert_eq!(Status::from(e).code(), Code::InvalidArgument);
    }
}
