//! Test support: a fake Backend, a TCP echo server, and the independent clients.
#![allow(dead_code)]

pub mod spdy_client;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use berth_streaming::{
    Backend, BackendError, ExitStatus, PortForwardStream, StreamIo, TerminalSize,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A backend whose "commands" exercise the protocol:
/// `echo ARGS…`, `cat` (stdin → stdout), `exit N` ("bye" on stderr, code N),
/// `big N` (N bytes on stdout), `resize N` (prints each of N sizes), `sleep`; `big` and
/// `sleep` count in `dropped_execs` when their future is dropped (finished or cancelled).
#[derive(Default)]
pub struct FakeBackend {
    pub resizes: Mutex<Vec<TerminalSize>>,
    pub dropped_execs: Arc<Mutex<u32>>,
}

pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

struct DropFlag(Arc<Mutex<u32>>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        *self.0.lock().unwrap() += 1;
    }
}

#[async_trait]
impl Backend for FakeBackend {
    async fn exec(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        _tty: bool,
        mut io: StreamIo,
    ) -> Result<ExitStatus, BackendError> {
        if container_id != "c1" {
            return Err(BackendError::ContainerNotFound(container_id.into()));
        }
        let mut out = io.stdout.take().unwrap();
        match cmd[0].as_str() {
            "echo" => {
                out.write_all(format!("{}\n", cmd[1..].join(" ")).as_bytes())
                    .await?;
            }
            "cat" => {
                let mut stdin = io.stdin.take().unwrap();
                tokio::io::copy(&mut stdin, &mut out).await?;
            }
            "exit" => {
                if let Some(mut err) = io.stderr.take() {
                    err.write_all(b"bye\n").await?;
                }
                return Ok(ExitStatus::from_code(cmd[1].parse().unwrap()));
            }
            "big" => {
                let _flag = DropFlag(self.dropped_execs.clone());
                let n: usize = cmd[1].parse().unwrap();
                out.write_all(&pattern(n)).await?;
            }
            "resize" => {
                let n: usize = cmd[1].parse().unwrap();
                let mut rx = io.resize.take().expect("resize channel");
                for _ in 0..n {
                    let size = rx.recv().await.unwrap();
                    self.resizes.lock().unwrap().push(size);
                    out.write_all(format!("{}x{}\n", size.width, size.height).as_bytes())
                        .await?;
                }
            }
            "sleep" => {
                let _flag = DropFlag(self.dropped_execs.clone());
                std::future::pending::<()>().await;
            }
            _ => return Ok(ExitStatus::from_code(127)),
        }
        out.shutdown().await?;
        Ok(ExitStatus::from_code(0))
    }

    async fn attach(
        &self,
        _container_id: &str,
        _tty: bool,
        mut io: StreamIo,
    ) -> Result<(), BackendError> {
        let mut out = io.stdout.take().unwrap();
        out.write_all(b"attached\n").await?;
        if let Some(mut stdin) = io.stdin.take() {
            tokio::io::copy(&mut stdin, &mut out).await?;
        }
        Ok(())
    }

    async fn port_forward(
        &self,
        _sandbox_id: &str,
        port: u16,
        mut stream: PortForwardStream,
    ) -> Result<(), BackendError> {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|source| BackendError::PortUnreachable { port, source })?;
        tokio::io::copy_bidirectional(&mut stream, &mut tcp).await?;
        Ok(())
    }
}

/// A TCP echo server on 127.0.0.1 that prefixes its answer with "echo:" per connection.
pub async fn echo_server() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(b"echo:").await;
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}
