//! Data generators and measurements for the benchmark scripts in `bench/`.

use std::collections::HashSet;
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use peerfold_bench::{Dice, fill_noise, noise};
use peerfold_protocol::chunking::{Block, ChunkParams};

#[derive(Parser)]
#[command(about = "peerfold benchmark helpers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write one file of SIZE pseudo-random bytes.
    GenFile { path: PathBuf, size: u64, seed: u64 },
    /// Write COUNT files of MIN..=MAX pseudo-random bytes, 1000 per directory.
    GenTree {
        dir: PathBuf,
        count: u64,
        min: u64,
        max: u64,
        seed: u64,
    },
    /// Insert BYTES pseudo-random bytes at OFFSET in a file (rewriting it in place).
    Insert {
        path: PathBuf,
        offset: u64,
        bytes: usize,
    },
    /// Bytes of blocks in AFTER (an `ls --json` entry list) not present in BEFORE.
    NewBlockBytes { before: PathBuf, after: PathBuf },
    /// Compare FastCDC average sizes: index size, dedup and bytes changed by small edits.
    ChunkParams {
        /// NAME=DIR: files under DIR, concatenated in path order, form one corpus.
        #[arg(long = "corpus")]
        corpora: Vec<String>,
        /// Bytes per corpus.
        #[arg(long, default_value_t = 256 << 20)]
        limit: usize,
        /// Random small inserts applied to each corpus.
        #[arg(long, default_value_t = 100)]
        edits: usize,
    },
}

fn main() -> io::Result<()> {
    match Cli::parse().command {
        Command::GenFile { path, size, seed } => gen_file(&path, size, seed),
        Command::GenTree {
            dir,
            count,
            min,
            max,
            seed,
        } => gen_tree(&dir, count, min, max, seed),
        Command::Insert {
            path,
            offset,
            bytes,
        } => insert(&path, offset, bytes),
        Command::NewBlockBytes { before, after } => new_block_bytes(&before, &after),
        Command::ChunkParams {
            corpora,
            limit,
            edits,
        } => chunk_params(&corpora, limit, edits),
    }
}

fn gen_file(path: &Path, size: u64, seed: u64) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, fs::File::create(path)?);
    let mut reader = {
        let mut h = blake3::Hasher::new();
        h.update(&seed.to_le_bytes());
        h.finalize_xof()
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        reader.fill(&mut buf[..n]);
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    out.flush()
}

fn gen_tree(dir: &Path, count: u64, min: u64, max: u64, seed: u64) -> io::Result<()> {
    let mut dice = Dice::new(seed);
    let mut buf = vec![0u8; max as usize];
    for i in 0..count {
        let sub = dir.join(format!("d{:04}", i / 1000));
        if i % 1000 == 0 {
            fs::create_dir_all(&sub)?;
        }
        let size = dice.roll(min..max + 1) as usize;
        fill_noise(seed ^ (i << 20), &mut buf[..size]);
        fs::write(sub.join(format!("f{i:07}.bin")), &buf[..size])?;
    }
    Ok(())
}

fn insert(path: &Path, offset: u64, bytes: usize) -> io::Result<()> {
    let mut data = fs::read(path)?;
    let at = (offset as usize).min(data.len());
    data.splice(at..at, noise(offset, bytes));
    fs::write(path, data)
}

fn new_block_bytes(before: &Path, after: &Path) -> io::Result<()> {
    /// (hash, size) of every block of every entry in an `ls --json` listing.
    fn blocks(path: &Path) -> io::Result<Vec<(String, u64)>> {
        let entries: serde_json::Value = serde_json::from_slice(&fs::read(path)?)?;
        let mut out = Vec::new();
        for entry in entries.as_array().into_iter().flatten() {
            for block in entry["blocks"].as_array().into_iter().flatten() {
                let hash = block["hash"].as_str().unwrap_or_default().to_owned();
                out.push((hash, block["size"].as_u64().unwrap_or(0)));
            }
        }
        Ok(out)
    }
    let old: HashSet<String> = blocks(before)?.into_iter().map(|(h, _)| h).collect();
    let new: u64 = blocks(after)?
        .into_iter()
        .filter(|(h, _)| !old.contains(h))
        .map(|(_, size)| size)
        .sum();
    println!("{new}");
    Ok(())
}

fn read_corpus(dir: &Path, limit: usize) -> io::Result<Vec<u8>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    let mut data = Vec::with_capacity(limit);
    for file in files {
        if data.len() >= limit {
            break;
        }
        if let Ok(f) = fs::File::open(&file) {
            f.take((limit - data.len()) as u64).read_to_end(&mut data)?;
        }
    }
    Ok(data)
}

fn chunk_with(data: &[u8], params: ChunkParams) -> Vec<Block> {
    // The protocol's chunker picks parameters from the size; this measurement needs fixed
    // ones, so it drives FastCDC directly with the same normalisation level.
    fastcdc::v2020::FastCDC::new(
        data,
        params.min_size as usize,
        params.avg_size as usize,
        params.max_size as usize,
    )
    .map(|c| Block {
        offset: c.offset as u64,
        size: c.length as u32,
        hash: blake3::hash(&data[c.offset..c.offset + c.length]),
    })
    .collect()
}

fn chunk_params(corpora: &[String], limit: usize, edits: usize) -> io::Result<()> {
    let mut sets: Vec<(String, Vec<u8>)> = Vec::new();
    for spec in corpora {
        let (name, dir) = spec.split_once('=').unwrap_or((spec, spec));
        sets.push((name.to_owned(), read_corpus(Path::new(dir), limit)?));
    }
    sets.push(("random".to_owned(), noise(99, limit)));
    println!(
        "| corpus | MiB | avg | blocks/GiB | index bytes/GiB | duplicate bytes | \
         new-block bytes per 1-64 B insert |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (name, data) in &sets {
        let mut edited = data.clone();
        let mut dice = Dice::new(7);
        for i in 0..edits {
            let at = dice.roll(0..edited.len() as u64) as usize;
            let len = dice.roll(1..65) as usize;
            edited.splice(at..at, noise(i as u64, len));
        }
        for avg_kib in [16u32, 32, 64, 128, 256] {
            let params = ChunkParams::with_avg(avg_kib * 1024);
            let blocks = chunk_with(data, params);
            let mut seen = HashSet::new();
            let duplicate: u64 = blocks
                .iter()
                .filter(|b| !seen.insert(b.hash))
                .map(|b| u64::from(b.size))
                .sum();
            let after = chunk_with(&edited, params);
            let new_bytes: u64 = after
                .iter()
                .filter(|b| !seen.contains(&b.hash))
                .map(|b| u64::from(b.size))
                .sum();
            let gib = data.len() as f64 / f64::from(1u32 << 30);
            let per_gib = blocks.len() as f64 / gib;
            // 36 bytes in the packed block list plus about 20 in the block-hash index.
            println!(
                "| {name} | {} | {avg_kib} KiB | {per_gib:.0} | {:.1} MiB | {:.2}% | {:.0} KiB |",
                data.len() >> 20,
                per_gib * 56.0 / f64::from(1u32 << 20),
                duplicate as f64 * 100.0 / data.len() as f64,
                new_bytes as f64 / edits as f64 / 1024.0,
            );
        }
    }
    Ok(())
}
