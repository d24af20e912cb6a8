//! The Kubernetes `Status` object written on the error stream (remotecommand v4 and later).

use serde::Serialize;

/// How an exec or attach ended, as the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    NonZeroExit(i32),
    Internal(String),
}

#[derive(Serialize)]
struct Status<'a> {
    metadata: Empty,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Details>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct Details {
    causes: Vec<Cause>,
}

#[derive(Serialize)]
struct Cause {
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    message: String,
}

impl Outcome {
    /// The message kubelet writes for a failure (also the whole error text of v1–v3).
    pub(crate) fn message(&self) -> Option<String> {
        match self {
            Outcome::Success => None,
            Outcome::NonZeroExit(code) => Some(format!(
                "command terminated with non-zero exit code: exit status {code}"
            )),
            Outcome::Internal(msg) => Some(format!("Internal error occurred: {msg}")),
        }
    }

    /// The `metav1.Status` JSON.
    pub(crate) fn to_json(&self) -> Vec<u8> {
        let status = match self {
            Outcome::Success => Status {
                metadata: Empty {},
                status: "Success",
                message: None,
                reason: None,
                details: None,
                code: None,
            },
            Outcome::NonZeroExit(code) => Status {
                metadata: Empty {},
                status: "Failure",
                message: self.message(),
                reason: Some("NonZeroExitCode"),
                details: Some(Details {
                    causes: vec![Cause {
                        reason: Some("ExitCode"),
                        message: code.to_string(),
                    }],
                }),
                code: None,
            },
            Outcome::Internal(msg) => Status {
                metadata: Empty {},
                status: "Failure",
                message: self.message(),
                reason: Some("InternalError"),
                details: Some(Details {
                    causes: vec![Cause {
                        reason: None,
                        message: msg.clone(),
                    }],
                }),
                code: Some(500),
            },
        };
        serde_json::to_vec(&status).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_match_kubelet() {
        assert_eq!(
            Outcome::Success.to_json(),
            br#"{"metadata":{},"status":"Success"}"#
        );
        let v: serde_json::Value =
            serde_json::from_slice(&Outcome::NonZeroExit(3).to_json()).unwrap();
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
    }
}
