//! Netlink operations of berth's plugins (rtnetlink, no `ip`): a blocking wrapper over an
//! rtnetlink connection opened inside the namespace the work is for.

use std::path::Path;

use std::net::IpAddr;
use std::os::fd::AsRawFd;

use futures_util::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkMessage,
};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};

use crate::error::CniError;

/// A netlink connection bound to the network namespace of the thread that opened it.
pub(crate) struct Netlink {
    pub(super) rt: tokio::runtime::Runtime,
    pub(super) handle: Handle,
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

    pub(super) fn require(&self, name: &str) -> Result<LinkMessage, CniError> {
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

    /// Creates bridge `name` (up) unless it exists; returns its index.
    pub fn ensure_bridge(&self, name: &str, mtu: Option<u32>) -> Result<LinkMessage, CniError> {
        if self.link(name)?.is_none() {
            let mut b = LinkBridge::new(name);
            if let Some(mtu) = mtu {
                b = b.mtu(mtu);
            }
            let res = self
                .rt
                .block_on(self.handle.link().add(b.build()).execute());
            match res {
                Ok(()) => {}
                // Another ADD created it concurrently.
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == libc::EEXIST => {}
                Err(e) => return Err(nl_err(format!("create bridge {name}"))(e)),
            }
        }
        self.set_up(name, true)?;
        self.require(name)
    }

    /// Creates a veth pair in one request: `host` here, enslaved to `master` and up; `peer`
    /// made directly inside the namespace open as `netns` under its final name, as the
    /// reference bridge plugin does. Moving an existing device between namespaces instead
    /// waits for an RCU grace period (`synchronize_net`, 10–20 ms on a busy node) and a rename.
    pub fn create_veth(
        &self,
        host: &str,
        peer: &str,
        master: u32,
        mtu: Option<u32>,
        netns: &std::fs::File,
    ) -> Result<(), CniError> {
        let mut peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_owned())
            .setns_by_fd(netns.as_raw_fd());
        let mut v = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host.to_owned())
            .controller(master)
            .up();
        if let Some(mtu) = mtu {
            v = v.mtu(mtu);
            peer_msg = peer_msg.mtu(mtu);
        }
        let v = v.set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg.build())));
        self.rt
            .block_on(self.handle.link().add(v.build()).execute())
            .map_err(nl_err(format!(
                "create veth {host} (on the bridge) / {peer} (in the sandbox netns)"
            )))
    }

    /// Sets hairpin mode on bridge port `name`.
    pub fn set_hairpin(&self, name: &str, on: bool) -> Result<(), CniError> {
        let index = self.require(name)?.header.index;
        self.rt
            .block_on(
                self.handle
                    .link()
                    .set_port(LinkBridgePort::new(index).hairpin(on).build())
                    .execute(),
            )
            .map_err(nl_err(format!("set hairpin on {name}")))
    }

    /// Deletes link `name`; no error if it does not exist.
    pub fn delete_link(&self, name: &str) -> Result<(), CniError> {
        let Some(link) = self.link(name)? else {
            return Ok(());
        };
        match self
            .rt
            .block_on(self.handle.link().del(link.header.index).execute())
        {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == libc::ENODEV => Ok(()),
            Err(e) => Err(nl_err(format!("delete link {name}"))(e)),
        }
    }

    /// Adds `addr` to link `name`; an address already there is fine. IPv6 addresses skip
    /// duplicate address detection (IPAM made them unique), so they are usable at once.
    pub fn add_address(&self, name: &str, addr: IpNet) -> Result<(), CniError> {
        let index = self.require(name)?.header.index;
        let mut req = self
            .handle
            .address()
            .add(index, addr.addr(), addr.prefix_len());
        if addr.addr().is_ipv6() {
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match self.rt.block_on(req.execute()) {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == libc::EEXIST => Ok(()),
            Err(e) => Err(nl_err(format!("add address {addr} to {name}"))(e)),
        }
    }

    /// Adds a route to `dst` via `gw` (if any) out of link `name`.
    pub fn add_route(&self, name: &str, dst: IpNet, gw: Option<IpAddr>) -> Result<(), CniError> {
        let index = self.require(name)?.header.index;
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst.network(), dst.prefix_len())
            .map_err(|e| invalid_route(dst, e))?;
        if let Some(gw) = gw {
            b = b.gateway(gw).map_err(|e| invalid_route(dst, e))?;
        }
        let msg = b.output_interface(index).build();
        match self.rt.block_on(self.handle.route().add(msg).execute()) {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == libc::EEXIST => Ok(()),
            Err(e) => Err(nl_err(format!("add route to {dst} on {name}"))(e)),
        }
    }

    /// The hardware address of `name`, as `aa:bb:cc:dd:ee:ff`.
    pub fn mac(&self, name: &str) -> Result<String, CniError> {
        Ok(mac_of(&self.require(name)?))
    }

    /// Whether `name` is administratively up.
    pub fn is_up(&self, name: &str) -> Result<bool, CniError> {
        Ok(self.require(name)?.header.flags.contains(LinkFlags::Up))
    }
}

fn invalid_route(dst: IpNet, e: impl std::fmt::Display) -> CniError {
    CniError::new(
        CniError::INVALID_NETWORK_CONFIG,
        format!("route to {dst}"),
        e.to_string(),
    )
}

/// The hardware address of a link, as `aa:bb:cc:dd:ee:ff`.
pub(crate) fn mac_of(link: &LinkMessage) -> String {
    link.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(mac) => Some(
                mac.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
            ),
            _ => None,
        })
        .unwrap_or_default()
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
