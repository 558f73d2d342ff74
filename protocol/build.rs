//! Compiles `proto/rill/v1/*.proto` with protox (a pure-Rust protobuf compiler, so no system
//! `protoc` is needed) and generates prost types into `OUT_DIR`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/rill/v1/error.proto",
        "proto/rill/v1/events.proto",
        "proto/rill/v1/node.proto",
        "proto/rill/v1/client.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
