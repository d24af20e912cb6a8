//! The channel between the runtime (parent) and the processes it forks (stage 1 and init): a
//! SOCK_SEQPACKET socketpair carrying one JSON message per packet. Errors inside the children
//! travel back as [`ToParent::Error`], so `create` and `exec` report them with their stage.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{Result, RuntimeError};

const MAX_MESSAGE: usize = 64 * 1024;

/// Messages from the forked processes to the runtime.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToParent {
    /// Stage 1 created a user namespace: write its uid/gid maps.
    UsernsCreated,
    /// Stage 1 forked the init (or exec) process; its PID as the runtime sees it.
    ChildPid { pid: i32 },
    /// Init set up its mounts: run the prestart and createRuntime hooks now.
    ReadyForHooks,
    /// The seccomp notify listener (attached): pass it to the spec's listenerPath.
    SeccompListener,
    /// Init finished setting up and now waits for `start` on the exec FIFO.
    Created,
    /// Something failed in `stage`; the child exits after sending this.
    Error { stage: String, message: String },
}

/// Messages from the runtime to the forked processes.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToChild {
    /// Stage 1 may proceed (the cgroup is set up).
    Go,
    /// The uid/gid maps are written.
    UsernsMapped,
    /// The runtime knows the init PID; init may proceed.
    Proceed,
    /// The seccomp listener was handed to the agent.
    SeccompListenerSent,
    /// The runtime hooks ran; the OCI state JSON for createContainer hooks.
    HooksDone { state: String },
}

#[derive(Debug)]
pub struct SyncSocket(OwnedFd);

/// A connected pair: (runtime end, child end).
pub fn pair() -> Result<(SyncSocket, SyncSocket)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| RuntimeError::sys("socketpair for the sync channel", e))?;
    Ok((SyncSocket(a), SyncSocket(b)))
}

impl SyncSocket {
    pub fn send<T: Serialize>(&self, msg: &T) -> Result<()> {
        let bytes = serde_json::to_vec(msg).expect("sync messages serialize");
        self.send_raw(&bytes, &[])
    }

    /// Sends `msg` with file descriptors attached (SCM_RIGHTS).
    pub fn send_with_fds<T: Serialize>(&self, msg: &T, fds: &[RawFd]) -> Result<()> {
        let bytes = serde_json::to_vec(msg).expect("sync messages serialize");
        self.send_raw(&bytes, fds)
    }

    fn send_raw(&self, bytes: &[u8], fds: &[RawFd]) -> Result<()> {
        let iov = [IoSlice::new(bytes)];
        let cmsgs = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsgs };
        sendmsg::<()>(
            self.0.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(|e| RuntimeError::sys("send on the sync channel", e))?;
        Ok(())
    }

    /// Receives one message; `Ok(None)` when every peer has closed its end (a child exited,
    /// or exec'd with the socket close-on-exec).
    pub fn recv<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        Ok(self.recv_with_fds()?.map(|(msg, _)| msg))
    }

    pub fn recv_with_fds<T: DeserializeOwned>(&self) -> Result<Option<(T, Vec<OwnedFd>)>> {
        let Some((bytes, fds)) = self.recv_raw_with_fds()? else {
            return Ok(None);
        };
        let msg = serde_json::from_slice(&bytes).map_err(|e| RuntimeError::Init {
            id: String::new(),
            stage: "sync".into(),
            message: format!("malformed sync message: {e}"),
        })?;
        Ok(Some((msg, fds)))
    }

    /// One packet's bytes and descriptors, undecoded; `None` at EOF.
    pub fn recv_raw_with_fds(&self) -> Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut cmsg = nix::cmsg_space!([RawFd; 8]);
        let (len, fds) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                self.0.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => {
                    let mut fds = Vec::new();
                    for c in msg
                        .cmsgs()
                        .map_err(|e| RuntimeError::sys("read cmsgs", e))?
                    {
                        if let ControlMessageOwned::ScmRights(raw) = c {
                            // SAFETY: SCM_RIGHTS just installed these descriptors in this
                            // process; nothing else owns them.
                            fds.extend(
                                raw.into_iter()
                                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                            );
                        }
                    }
                    break (msg.bytes, fds);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(RuntimeError::sys("receive on the sync channel", e)),
            }
        };
        if len == 0 {
            return Ok(None);
        }
        buf.truncate(len);
        Ok(Some((buf, fds)))
    }
}

impl AsFd for SyncSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_eof() {
        let (a, b) = pair().unwrap();
        b.send(&ToParent::ChildPid { pid: 7 }).unwrap();
        match a.recv::<ToParent>().unwrap() {
            Some(ToParent::ChildPid { pid: 7 }) => {}
            other => panic!("unexpected {other:?}"),
        }
        drop(b);
        assert!(a.recv::<ToParent>().unwrap().is_none());
    }

    #[test]
    fn passes_descriptors() {
        let (a, b) = pair().unwrap();
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        b.send_with_fds(&ToChild::Go, &[file.as_raw_fd()]).unwrap();
        let (msg, fds) = a.recv_with_fds::<ToChild>().unwrap().unwrap();
        assert!(matches!(msg, ToChild::Go));
        assert_eq!(fds.len(), 1);
    }
}
