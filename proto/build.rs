//! Generates the gRPC code with a vendored protoc: a fresh machine needs nothing installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // tonic-prost-build runs the protoc that PROTOC names.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/cluster.proto");
    println!("cargo:rerun-if-changed=proto/quic.proto");
    tonic_prost_build::configure()
        .compile_protos(&["proto/cluster.proto", "proto/quic.proto"], &["proto"])?;
    Ok(())
}
