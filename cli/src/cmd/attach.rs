//! `exec -i/-t` and `attach`: CRI Exec/Attach hand out a one-time URL of berthd's streaming
//! server; the session runs over it ([`crate::remotecommand`]).

use anyhow::{bail, Context, Result};
use cri_api::v1 as cri;

use super::containers::{exit_byte, state_name};
use crate::client::{answer, Cri};
use crate::remotecommand::{self, End, Streams};
use crate::{AttachArgs, ExecArgs};

/// berth's exit code when a session ends on a signal (as a shell reports SIGINT).
pub const INTERRUPTED: u8 = 130;

/// exec with stdin and/or a TTY; the exit code is the process's.
pub async fn exec(c: &mut Cri, args: &ExecArgs) -> Result<u8> {
    let id = c.resolve_container(&args.container).await?;
    let r =
        c.rt.exec(cri::ExecRequest {
            container_id: id,
            cmd: args.cmd.clone(),
            tty: args.tty,
            stdin: args.interactive,
            stdout: true,
            stderr: !args.tty,
        })
        .await;
    let url = answer(r, "exec")?.url;
    let streams = Streams {
        stdin: args.interactive,
        tty: args.tty,
        detach_keys: false,
    };
    match remotecommand::session(&url, streams).await? {
        End::Exited(code) => Ok(exit_byte(code)),
        End::Interrupted | End::Detached => Ok(INTERRUPTED),
        End::Closed => {
            bail!("exec: berthd's streaming server closed the session without an exit status")
        }
    }
}

/// What the container was created with: (stdin, tty).
async fn created_with(c: &mut Cri, id: &str) -> Result<(bool, bool)> {
    let s = c.container_status(id, true).await?;
    let info: serde_json::Value = s
        .info
        .get("info")
        .and_then(|i| serde_json::from_str(i).ok())
        .unwrap_or_default();
    let config = &info["config"];
    Ok((
        config["stdin"].as_bool().unwrap_or(false),
        config["tty"].as_bool().unwrap_or(false),
    ))
}

/// Attaches to a running container's stdio until it exits (`Exited` with its exit code from
/// its status), the user detaches or berth gets a signal.
pub async fn attach_id(c: &mut Cri, id: &str, no_stdin: bool) -> Result<End> {
    let status = c
        .container_status(id, false)
        .await?
        .status
        .context("berthd answered no container status")?;
    if status.state != cri::ContainerState::ContainerRunning as i32 {
        bail!(
            "container {id} is {}: only a running container can be attached to",
            state_name(status.state).to_lowercase()
        );
    }
    let (stdin, tty) = created_with(c, id).await?;
    let stdin = stdin && !no_stdin;
    let r =
        c.rt.attach(cri::AttachRequest {
            container_id: id.to_owned(),
            stdin,
            tty,
            stdout: true,
            stderr: !tty,
        })
        .await;
    let url = answer(r, "attach")?.url;
    let streams = Streams {
        stdin,
        tty,
        detach_keys: true,
    };
    match remotecommand::session(&url, streams).await? {
        End::Detached => {
            eprintln!("\r\nberth: detached from {id} (it runs on)");
            Ok(End::Detached)
        }
        End::Interrupted => Ok(End::Interrupted),
        End::Exited(_) | End::Closed => {
            // Attach reports no exit code: the container's status has it (once the shim saw
            // the exit; a session that ended while the container runs on counts as detached).
            match super::containers::wait_exited(c, id, ATTACH_EXIT_WAIT).await? {
                Some(status) => Ok(End::Exited(status.exit_code)),
                None => Ok(End::Detached),
            }
        }
    }
}

/// How long an ended attach session waits for the container's exit to be recorded.
const ATTACH_EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

pub async fn attach(c: &mut Cri, args: &AttachArgs) -> Result<u8> {
    let id = c.resolve_container(&args.container).await?;
    Ok(match attach_id(c, &id, args.no_stdin).await? {
        End::Exited(code) => exit_byte(code),
        End::Detached | End::Closed => 0,
        End::Interrupted => INTERRUPTED,
    })
}
