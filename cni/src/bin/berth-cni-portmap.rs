//! berth-cni-portmap: berth's portmap CNI plugin (pass-through until nftables forwarding lands).

fn main() -> std::process::ExitCode {
    cni::plugin::run(&cni::plugin::portmap::Portmap)
}
