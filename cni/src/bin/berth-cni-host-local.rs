//! berth-cni-host-local: berth's host-local CNI plugin.

fn main() -> std::process::ExitCode {
    cni::plugin::run(&cni::plugin::host_local::HostLocal)
}
