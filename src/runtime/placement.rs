//! Which core owns what: anonymous connections are dealt round-robin (exact balance by count);
//! things with an identity — a peer's node id, a subject — live on the core their key maps to, the
//! same on every node and every run (a fixed hash, not the process's random one).

use std::cell::Cell;

/// Placement over `cores` cores.
#[derive(Debug)]
pub struct Placement {
    cores: usize,
    next: Cell<usize>,
}

impl Placement {
    /// Placement over `cores` cores (at least one).
    pub fn new(cores: usize) -> Placement {
        Placement { cores: cores.max(1), next: Cell::new(0) }
    }

    /// Number of cores.
    pub fn cores(&self) -> usize {
        self.cores
    }

    /// The core for the next anonymous connection, in turn.
    pub fn next(&self) -> usize {
        let n = self.next.get();
        self.next.set(n.wrapping_add(1));
        n % self.cores
    }

    /// The core that owns `key`: FNV-1a (64-bit) of the key, modulo the cores. Stable across
    /// processes and runs, so two nodes agree on it.
    pub fn of_key(&self, key: &[u8]) -> usize {
        (fnv1a(key) % self.cores as u64) as usize
    }
}

/// FNV-1a, 64-bit.
pub fn fnv1a(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_deals_in_turn_and_keys_map_stably() {
        let p = Placement::new(3);
        let dealt: Vec<usize> = (0..6).map(|_| p.next()).collect();
        assert_eq!(dealt, vec![0, 1, 2, 0, 1, 2]);
        // The published FNV-1a test vectors.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(p.of_key(b"node-7"), p.of_key(b"node-7"));
        let spread: std::collections::HashSet<usize> = (0..64).map(|i| p.of_key(format!("n{i}").as_bytes())).collect();
        assert_eq!(spread.len(), 3, "64 keys all landed on {spread:?}");
    }
}
