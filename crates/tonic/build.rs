//! With the `examples` feature (which this crate's own tests and examples turn on):
//! generates the stubs of their `.proto` files, with the `protoc` that the
//! `protoc-bin-vendored` crate ships, so that a fresh machine needs nothing installed.
//! Without it, nothing: the library needs no generated code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "examples")]
    {
        if std::env::var_os("PROTOC").is_none() {
            std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
        }
        tonic_prost_build::configure().compile_protos(
            &["proto/helloworld.proto", "proto/numbers.proto"],
            &["proto"],
        )?;
    }
    Ok(())
}
