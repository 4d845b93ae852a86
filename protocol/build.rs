//! Compiles `proto/peerfold.proto` with protox (a pure-Rust protobuf compiler), so building
//! needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = "../proto";
    let proto_file = "../proto/peerfold.proto";
    println!("cargo:rerun-if-changed={proto_file}");
    let descriptors = protox::compile([proto_file], [proto_dir])?;
    // Block data is sliced out of the received frame instead of copied.
    prost_build::Config::new()
        .bytes([".peerfold.v1.Response.data"])
        .compile_fds(descriptors)?;
    Ok(())
}
