//! berth-cni-bridge: berth's bridge CNI plugin.

fn main() -> std::process::ExitCode {
    cni::plugin::run(&cni::plugin::bridge::Bridge)
}
