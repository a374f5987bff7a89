//! Uploads one file through the SDK and prints `seconds p50_ms p99_ms` (chunk latencies) for
//! `scripts/bench-upload`. Usage: `bench_upload <node-url> <parallel> <file>`, with
//! WHARF_TOKEN and, for quic:// nodes, WHARF_CA.

use std::time::Instant;

use wharf_client::{Client, Trust};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, node, parallel, file] = args.as_slice() else {
        return Err("usage: bench_upload <node-url> <parallel> <file>".into());
    };
    let token = std::env::var("WHARF_TOKEN")?;
    let trust = match std::env::var_os("WHARF_CA") {
        Some(ca) => Trust::Ca(std::fs::read(ca)?),
        None => Trust::Unset,
    };
    let mut client = Client::with_trust(vec![node.clone()], token, trust)?;
    client.parallel = parallel.parse()?;
    let t0 = Instant::now();
    let up = client
        .upload(std::path::Path::new(file), None, |_| {}, None)
        .await?;
    let secs = t0.elapsed().as_secs_f64();
    let mut ms: Vec<f64> = up
        .chunk_latencies
        .iter()
        .map(|d| d.as_secs_f64() * 1e3)
        .collect();
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    println!("{secs} {} {}", pct(0.5), pct(0.99));
    Ok(())
}
