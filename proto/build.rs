//! Compiles `proto/*.proto` with protox (pure Rust: no protoc needed on the machine) and
//! generates the prost messages and tonic services.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/metapb.proto",
        "proto/scheduler.proto",
        "proto/kvrpc.proto",
        "proto/raftpb.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
