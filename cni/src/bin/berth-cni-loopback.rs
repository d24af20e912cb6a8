//! berth-cni-loopback: berth's loopback CNI plugin.

fn main() -> std::process::ExitCode {
    cni::plugin::run(&cni::plugin::loopback::Loopback)
}
