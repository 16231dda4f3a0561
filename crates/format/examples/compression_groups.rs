//! Measures how compressing runs of consecutive non-zero 64 KiB chunks
//! together (groups) changes stored size and compression time, against
//! compressing each chunk alone (the measurement behind docs/format.md's
//! choice of level and group size).
//! Usage: cargo run --release -p standby-format --example compression_groups IMAGE [LEVEL:GROUP ...]
use std::time::Instant;

fn main() {
    let mut arguments = std::env::args().skip(1);
    let path = arguments.next().expect("usage: compression_groups IMAGE [LEVEL:GROUP ...]");
    let mut settings: Vec<(i32, usize)> = arguments
        .map(|a| {
            let (level, group) = a.split_once(':').expect("LEVEL:GROUP");
            (level.parse().unwrap(), group.parse().unwrap())
        })
        .collect();
    if settings.is_empty() {
        settings = vec![(1, 1), (1, 4), (2, 1), (2, 2), (2, 4), (3, 1)];
    }
    let data = std::fs::read(path).unwrap();
    let chunks: Vec<&[u8]> = data.chunks(65536).filter(|c| c.iter().any(|&b| b != 0)).collect();
    println!("{} non-zero chunks, {} bytes", chunks.len(), chunks.len() * 65536);
    for (level, group) in settings {
        let started = Instant::now();
        let mut total = 0usize;
        let mut compressor = zstd::bulk::Compressor::new(level).unwrap();
        for run in chunks.chunks(group) {
            let joined: Vec<u8> = run.concat();
            total += compressor.compress(&joined).unwrap().len().min(joined.len());
        }
        println!(
            "level {level} group {group:>2}: {:>12} bytes, {:.2} s (one core)",
            total,
            started.elapsed().as_secs_f64()
        );
    }
}
