//! Measures how compressing runs of consecutive non-zero 64 KiB chunks
//! together (one frame per run) changes stored size and compression time,
//! against compressing each chunk alone: the measurement behind
//! docs/format.md's choice of zstd level and frame size. Times are the
//! thread's CPU time, the least of three rounds (this machine is shared).
//!
//! Usage: cargo run --release -p standby-format --example compression_groups IMAGE [LEVEL:CHUNKS ...]

fn main() {
    let mut arguments = std::env::args().skip(1);
    let path = arguments.next().expect("usage: compression_groups IMAGE [LEVEL:CHUNKS ...]");
    let mut settings: Vec<(i32, usize)> = arguments
        .map(|a| {
            let (level, group) = a.split_once(':').expect("LEVEL:CHUNKS");
            (level.parse().expect("a level"), group.parse().expect("a chunk count"))
        })
        .collect();
    if settings.is_empty() {
        settings = vec![(1, 1), (1, 4), (1, 8), (2, 1), (2, 4), (2, 8), (3, 1)];
    }
    let data = std::fs::read(path).expect("the image is readable");
    let chunks: Vec<&[u8]> = data.chunks(65536).filter(|c| c.iter().any(|&b| b != 0)).collect();
    println!("{} non-zero chunks, {} bytes", chunks.len(), chunks.len() * 65536);
    let mut best = vec![f64::MAX; settings.len()];
    let mut stored = vec![0usize; settings.len()];
    for _round in 0..3 {
        for (i, &(level, group)) in settings.iter().enumerate() {
            let mut compressor = zstd::bulk::Compressor::new(level).expect("a valid level");
            let started = thread_cpu_seconds();
            let mut total = 0usize;
            for run in chunks.chunks(group) {
                let joined: Vec<u8> = run.concat();
                total += compressor.compress(&joined).expect("compresses").len().min(joined.len());
            }
            best[i] = best[i].min(thread_cpu_seconds() - started);
            stored[i] = total;
        }
    }
    for (i, (level, group)) in settings.iter().enumerate() {
        println!("level {level} chunks per frame {group:>2}: {:>12} bytes, {:.2} s CPU", stored[i], best[i]);
    }
}

fn thread_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    usage.ru_utime.tv_sec as f64 + usage.ru_utime.tv_usec as f64 / 1e6
}
