//! berth-cni-portmap: berth's portmap CNI plugin (hostPort forwarding over nftables).

fn main() -> std::process::ExitCode {
    cni::plugin::run(&cni::plugin::portmap::Portmap)
}
