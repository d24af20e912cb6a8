//! Netlink operations of berth's plugins (rtnetlink, no `ip`): a blocking wrapper over an
//! rtnetlink connection opened inside the namespace the work is for.

use std::path::Path;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{LinkFlags, LinkMessage};
use rtnetlink::{Handle, LinkUnspec};

use crate::error::CniError;

/// A netlink connection bound to the network namespace of the thread that opened it.
pub(crate) struct Netlink {
    rt: tokio::runtime::Runtime,
    handle: Handle,
}

fn nl_err(what: String) -> impl FnOnce(rtnetlink::Error) -> CniError {
    move |e| CniError::new(CniError::IO_FAILURE, what, e.to_string())
}

impl Netlink {
    /// Opens a connection in the calling thread's current network namespace.
    pub fn open() -> Result<Self, CniError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| {
                CniError::new(CniError::IO_FAILURE, "start netlink runtime", e.to_string())
            })?;
        let (conn, handle) = rt
            .block_on(async { rtnetlink::new_connection().map(|(conn, handle, _)| (conn, handle)) })
            .map_err(|e| {
                CniError::new(CniError::IO_FAILURE, "open netlink socket", e.to_string())
            })?;
        rt.spawn(conn);
        Ok(Netlink { rt, handle })
    }

    /// The link named `name`, if it exists.
    pub fn link(&self, name: &str) -> Result<Option<LinkMessage>, CniError> {
        let res = self.rt.block_on(async {
            self.handle
                .link()
                .get()
                .match_name(name.to_owned())
                .execute()
                .try_next()
                .await
        });
        match res {
            Ok(link) => Ok(link),
            Err(rtnetlink::Error::NetlinkError(e))
                if e.raw_code() == -libc::ENODEV || e.raw_code() == libc::ENODEV =>
            {
                Ok(None)
            }
            Err(e) => Err(nl_err(format!("get link {name}"))(e)),
        }
    }

    fn require(&self, name: &str) -> Result<LinkMessage, CniError> {
        self.link(name)?.ok_or_else(|| {
            CniError::new(CniError::IO_FAILURE, format!("link {name} not found"), "")
        })
    }

    /// Sets `name` up or down.
    pub fn set_up(&self, name: &str, up: bool) -> Result<(), CniError> {
        let index = self.require(name)?.header.index;
        let msg = LinkUnspec::new_with_index(index);
        let msg = if up { msg.up() } else { msg.down() }.build();
        self.rt
            .block_on(self.handle.link().set(msg).execute())
            .map_err(nl_err(format!(
                "set link {name} {}",
                if up { "up" } else { "down" }
            )))
    }

    /// Whether `name` is administratively up.
    pub fn is_up(&self, name: &str) -> Result<bool, CniError> {
        Ok(self.require(name)?.header.flags.contains(LinkFlags::Up))
    }
}

/// Runs `f` with a netlink connection inside the namespace at `netns`.
pub(crate) fn in_netns<T, F>(netns: &Path, f: F) -> Result<T, CniError>
where
    T: Send + 'static,
    F: FnOnce(&Netlink) -> Result<T, CniError> + Send + 'static,
{
    crate::netns::run_in(netns, move || f(&Netlink::open()?)).map_err(|e| {
        CniError::new(
            CniError::IO_FAILURE,
            format!("enter netns {}", netns.display()),
            e.to_string(),
        )
    })?
}
