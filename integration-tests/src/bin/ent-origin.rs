//! A stand-in ENT backend for Rempart's tests and benchmarks: see `integration_tests::origin`.
use clap::Parser;

fn main() {
    let args = integration_tests::origin::OriginArgs::parse();
    if let Err(e) = integration_tests::origin::run(args) {
        eprintln!("ent-origin: {e}");
        std::process::exit(1);
    }
}
