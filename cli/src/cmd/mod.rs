//! The commands, grouped by what they act on.

pub mod archive;
pub mod attach;
pub mod containers;
pub mod images;
pub mod login;
pub mod pods;
pub mod portforward;
pub mod run;
pub mod run_options;
pub mod stats;
pub mod system;

use std::collections::HashMap;

use anyhow::Result;

/// The label `berth run` puts on the pods and containers it makes (its pod is removed with
/// its container).
pub const RUN_LABEL: &str = "io.berth.cli/run";
/// The annotation on a `berth run` pod naming its log directory (removed with the pod).
pub const LOG_DIR_ANNOTATION: &str = "io.berth.cli/log-directory";

/// A `verbose` status's `info` map: values that are JSON parsed, others kept as strings.
pub fn info_json(info: &HashMap<String, String>) -> serde_json::Value {
    let map = info
        .iter()
        .map(|(k, v)| {
            let value =
                serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.clone()));
            (k.clone(), value)
        })
        .collect();
    serde_json::Value::Object(map)
}

pub fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}
