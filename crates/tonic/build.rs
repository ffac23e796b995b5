//! Generates the stubs of the examples' and tests' `.proto` files, with the `protoc` that
//! the `protoc-bin-vendored` crate ships, so that a fresh machine needs nothing installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    tonic_prost_build::configure().compile_protos(
        &["proto/helloworld.proto", "proto/numbers.proto"],
        &["proto"],
    )?;
    Ok(())
}
