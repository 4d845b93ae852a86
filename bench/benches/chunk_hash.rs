//! (a) The machine's limit for indexing: FastCDC + BLAKE3 over data already in memory.
//!
//! `cargo bench -p peerfold-bench --bench chunk_hash`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use peerfold_protocol::chunking::{ChunkParams, Chunker};

const LEN: usize = 64 << 20;

fn chunk_hash(c: &mut Criterion) {
    let data = peerfold_bench::noise(1, LEN);
    let mut group = c.benchmark_group("in-memory 64 MiB");
    group.throughput(Throughput::Bytes(LEN as u64));
    group.sample_size(20);

    let mut chunker = Chunker::new();
    group.bench_function("chunk+hash (Chunker, as the scanner runs it)", |b| {
        b.iter(|| chunker.chunk(&data[..], LEN as u64, |_| {}).unwrap())
    });
    let params = ChunkParams::for_file_size(LEN as u64);
    group.bench_function("FastCDC cut points only", |b| {
        b.iter(|| {
            fastcdc::v2020::FastCDC::new(
                &data,
                params.min_size as usize,
                params.avg_size as usize,
                params.max_size as usize,
            )
            .count()
        })
    });
    group.bench_function("BLAKE3 only, one thread", |b| {
        b.iter(|| blake3::hash(&data))
    });
    group.finish();
}

criterion_group!(benches, chunk_hash);
criterion_main!(benches);
