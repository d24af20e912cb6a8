//! `version` and `info`.

use anyhow::Result;
use cri_api::v1 as cri;

use crate::client::{self, answer, Cri};

pub async fn version(address: &str) -> Result<()> {
    println!("Client:\n Version:\t{}", env!("CARGO_PKG_VERSION"));
    let mut c = client::connect(address).await?;
    let v = answer(
        c.rt.version(cri::VersionRequest::default()).await,
        "version",
    )?;
    println!(
        "Server:\n Runtime:\t{}\n Version:\t{}\n CRI API:\t{}",
        v.runtime_name, v.runtime_version, v.runtime_api_version
    );
    Ok(())
}

pub async fn info(c: &mut Cri) -> Result<()> {
    let v = answer(
        c.rt.version(cri::VersionRequest::default()).await,
        "version",
    )?;
    let s = answer(
        c.rt.status(cri::StatusRequest { verbose: true }).await,
        "status",
    )?;
    println!("Runtime:\t{} {}", v.runtime_name, v.runtime_version);
    println!("CRI API:\t{}", v.runtime_api_version);
    if let Some(status) = &s.status {
        println!("Conditions:");
        for cond in &status.conditions {
            let why = if cond.reason.is_empty() {
                String::new()
            } else {
                format!(" ({}: {})", cond.reason, cond.message)
            };
            println!("  {}:\t{}{why}", cond.r#type, cond.status);
        }
    }
    let mut handlers: Vec<_> = s.runtime_handlers.iter().map(|h| h.name.clone()).collect();
    handlers.sort();
    if !handlers.is_empty() {
        println!("Runtime handlers:\t{}", handlers.join(", "));
    }
    let mut keys: Vec<_> = s.info.keys().collect();
    keys.sort();
    for k in keys {
        println!("{k}:\t{}", s.info[k]);
    }
    Ok(())
}
