//! What the automerge tests share: a reproducible stream of numbers.

#![allow(dead_code)]

use automerge::ActorId;

/// splitmix64: a reproducible stream of numbers for one seed (the tests name their seeds).
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n.max(1) as u64) as usize
    }

    /// A random actor id.
    pub fn actor(&mut self) -> ActorId {
        ActorId::from((0..16).map(|_| self.below(256) as u8).collect::<Vec<u8>>())
    }
}
