//! Compiles `proto/peerfold.proto` and `proto/bep_hello.proto` with protox (a pure-Rust protobuf compiler), so building
//! needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = "../proto";
    let proto_files = ["../proto/peerfold.proto", "../proto/bep_hello.proto"];
    for file in proto_files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(proto_files, [proto_dir])?;
    // Block data is sliced out of the received frame instead of copied.
    prost_build::Config::new()
        .bytes([".peerfold.v1.Response.data"])
        .compile_fds(descriptors)?;
    Ok(())
}
