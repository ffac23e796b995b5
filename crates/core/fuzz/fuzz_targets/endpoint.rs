//! Random operation sequences and random packets against three wired Endpoints: the
//! driver in `tests/support/ops.rs`, which `cargo test` also runs for a few hundred cases.
#![no_main]

#[path = "../../tests/support/ops.rs"]
mod ops;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ops::run(data);
});
