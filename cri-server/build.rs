//! Generates berth's admin gRPC service (`proto/berth/admin/v1/images.proto`): the server
//! berthd serves beside the CRI; the CLI generates its client from the same file.

fn main() {
    println!("cargo:rerun-if-changed=proto/berth/admin/v1/images.proto");
    tonic_prost_build::configure()
        .build_client(false)
        .compile_protos(&["proto/berth/admin/v1/images.proto"], &["proto"])
        .expect("compile proto/berth/admin/v1/images.proto (is protoc installed?)");
}
