//! Generates the client of berthd's admin gRPC service from the file berthd serves it from.

fn main() {
    let proto = "../cri-server/proto/berth/admin/v1/images.proto";
    println!("cargo:rerun-if-changed={proto}");
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&[proto], &["../cri-server/proto"])
        .expect("compile the berth admin proto (is protoc installed?)");
}
