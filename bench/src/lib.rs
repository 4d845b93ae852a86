//! Measurement helpers shared by the benches and the `peerfold-bench` tool.

/// Deterministic pseudo-random bytes (BLAKE3 in XOF mode), fast enough to make gigabytes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    fill_noise(seed, &mut out);
    out
}

/// Fills `out` with the pseudo-random stream for `seed`.
pub fn fill_noise(seed: u64, out: &mut [u8]) {
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(out);
}

/// A small deterministic generator for sizes and positions.
#[derive(Debug)]
pub struct Dice(blake3::OutputReader);

impl Dice {
    /// Dice seeded by `seed`.
    pub fn new(seed: u64) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"dice").update(&seed.to_le_bytes());
        Self(hasher.finalize_xof())
    }

    /// A value in `range` (end exclusive; the range must not be empty).
    pub fn roll(&mut self, range: std::ops::Range<u64>) -> u64 {
        let mut bytes = [0u8; 8];
        self.0.fill(&mut bytes);
        range.start + u64::from_le_bytes(bytes) % (range.end - range.start)
    }
}
