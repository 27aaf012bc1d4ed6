//! Streaming measurement throughput and memory: builds and then reads images with a large
//! ramdisk, printing MB/s and the process's peak resident memory (VmHWM) after each size.
//! Peak memory must stay flat as the ramdisk grows: sections are never held whole.
//!
//! Run: `cargo bench -p enclosure-eif --bench measure` (EIF_BENCH_MB sets the largest size,
//! default 256).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::time::Instant;

use enclosure_eif::{EifIdentityInfo, build_eif_file, read_eif};

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn write_ramdisk(path: &std::path::Path, mb: usize) -> std::io::Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    let mut block = vec![0u8; 1 << 20];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..mb {
        for b in block.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        w.write_all(&block)?;
    }
    w.flush()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let max_mb: usize = std::env::var("EIF_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let dir = tempfile::tempdir()?;
    let kernel = dir.path().join("bzImage");
    write_ramdisk(&kernel, 8)?;
    println!(
        "{:>8} {:>12} {:>12} {:>14}",
        "ramdisk", "build MB/s", "read MB/s", "peak RSS KiB"
    );
    let mut sizes = vec![16, 64];
    sizes.push(max_mb.max(1));
    for mb in sizes {
        let ramdisk = dir.path().join(format!("r{mb}.cpio"));
        write_ramdisk(&ramdisk, mb)?;
        let out = dir.path().join(format!("r{mb}.eif"));
        let total = (mb + 8) as f64;

        let t = Instant::now();
        let identity = EifIdentityInfo::new("bench", "1", 0)?;
        let built = build_eif_file(
            &kernel,
            "console=ttyS0",
            std::slice::from_ref(&ramdisk),
            identity,
            None,
            &out,
        )?;
        let build_rate = total / t.elapsed().as_secs_f64();

        let t = Instant::now();
        let info = read_eif(&mut File::open(&out)?)?;
        let read_rate = total / t.elapsed().as_secs_f64();
        assert_eq!(info.measurements, built.measurements);

        println!(
            "{:>6}MB {build_rate:>12.0} {read_rate:>12.0} {:>14}",
            mb,
            peak_rss_kib().unwrap_or(0)
        );
        std::fs::remove_file(&ramdisk)?;
        std::fs::remove_file(&out)?;
    }
    Ok(())
}
