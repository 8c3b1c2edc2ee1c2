//! Generates prost types for the subset of CRIU's RPC and image schemas cns uses.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc keeps the build independent of the host's protobuf-compiler.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=proto/rpc.proto");
    println!("cargo:rerun-if-changed=proto/images.proto");
    prost_build::Config::new().compile_protos(&["proto/rpc.proto", "proto/images.proto"], &["proto"])?;
    Ok(())
}
