//! Quick manual run: `cargo run --release -p homa-harness --example chaos_smoke -- RPCS LOSS SEED`.
use homa_harness::{run_chaos, ChaosConfig};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rpcs = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let loss = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0.1);
    let seed = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1);
    let cfg = ChaosConfig {
        rpcs,
        loss,
        dup: 0.05,
        reorder: 0.1,
        seed,
        ..ChaosConfig::default()
    };
    let r = run_chaos(&cfg, &mut |_| {});
    println!("{}", serde_json::to_string_pretty(&r).unwrap());
}
