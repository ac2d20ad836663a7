//! A small seeded pseudo-random generator (xorshift64*): Raft's only source of randomness, so
//! that a node's behaviour is a pure function of its inputs and seed. Public so that
//! simulations of a cluster can draw from the same kind of generator.

#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Avoid the all-zero state, and spread nearby seeds apart.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[low, high)`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low).max(1)
    }

    /// Uniform in `[0, n)`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.range(0, n)
    }

    /// True with the given percent chance.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}
