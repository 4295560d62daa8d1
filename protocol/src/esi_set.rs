//! The set of ESIs a receiver holds for one source block: which symbols it already has, so
//! a repeated one costs neither a store request nor a place in the count.
//!
//! Our uplink numbers ESIs from 0 upwards (after a restart, from
//! [`DENSE_ESIS_PER_SOURCE_SYMBOL`] / 2 times K at most), so a bitmap over the first few
//! K ESIs holds almost everything in about K/8 bytes; the rest go to a small, capped set.
//! With 2000 simulated receivers, hash sets of K entries did not fit in any cache.

use std::collections::HashSet;

/// ESIs below this many times K live in the bitmap.
pub const DENSE_ESIS_PER_SOURCE_SYMBOL: u32 = 16;
/// The most ESIs held beyond the bitmap, per block: an insider sending scattered ESIs
/// cannot make a block's set grow without limit.
pub const SPARSE_ESIS_MAX: usize = 4096;

/// The ESIs held for one block.
#[derive(Debug, Clone, Default)]
pub struct EsiSet {
    dense_limit: u32,
    words: Vec<u64>,
    sparse: HashSet<u32>,
    count: u32,
}

/// What [`EsiSet::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// A new ESI: it counts.
    New,
    /// Already held.
    Duplicate,
    /// Beyond every bound: not held, not counted.
    Full,
}

impl EsiSet {
    /// An empty set for a block of `source_symbols` (K) symbols.
    pub fn new(source_symbols: u32) -> Self {
        EsiSet { dense_limit: source_symbols.saturating_mul(DENSE_ESIS_PER_SOURCE_SYMBOL).max(64), ..EsiSet::default() }
    }

    /// Distinct ESIs held, plus any counted without their ESI (see [`EsiSet::with_count`]).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// A set that counts `count` symbols whose ESIs it does not know (kept before a
    /// restart): storage reports any of them that arrive again as duplicates.
    pub fn with_count(source_symbols: u32, count: u32) -> Self {
        EsiSet { count, ..EsiSet::new(source_symbols) }
    }

    /// Whether an ESI is held.
    pub fn contains(&self, esi: u32) -> bool {
        if esi < self.dense_limit {
            self.words.get((esi / 64) as usize).is_some_and(|w| w & (1u64 << (esi % 64)) != 0)
        } else {
            self.sparse.contains(&esi)
        }
    }

    /// Adds an ESI.
    pub fn insert(&mut self, esi: u32) -> Inserted {
        if esi < self.dense_limit {
            let (word, bit) = ((esi / 64) as usize, 1u64 << (esi % 64));
            if self.words.len() <= word {
                // Grow by half again, so a stream of rising ESIs costs amortised O(1).
                let len = (word + 1).max(self.words.len() * 3 / 2).min(self.dense_limit.div_ceil(64) as usize);
                self.words.resize(len, 0);
            }
            if self.words[word] & bit != 0 {
                return Inserted::Duplicate;
            }
            self.words[word] |= bit;
        } else {
            if self.sparse.contains(&esi) {
                return Inserted::Duplicate;
            }
            if self.sparse.len() >= SPARSE_ESIS_MAX {
                return Inserted::Full;
            }
            self.sparse.insert(esi);
        }
        self.count += 1;
        Inserted::New
    }

    /// Takes back an ESI that storage did not keep, so it counts no more and may be kept
    /// when it comes again.
    pub fn remove(&mut self, esi: u32) {
        let held = if esi < self.dense_limit {
            let (word, bit) = ((esi / 64) as usize, 1u64 << (esi % 64));
            match self.words.get_mut(word) {
                Some(w) if *w & bit != 0 => {
                    *w &= !bit;
                    true
                }
                _ => false,
            }
        } else {
            self.sparse.remove(&esi)
        };
        if held {
            self.count = self.count.saturating_sub(1);
        }
    }

    /// Corrects the count to what storage could read back (a torn or lost record), keeping
    /// the ESIs: their symbols count again only if they are kept again.
    pub fn set_count(&mut self, count: u32) {
        self.count = count;
    }

    /// Forgets everything (the block's symbols were dropped).
    pub fn clear(&mut self) {
        self.words.clear();
        self.sparse.clear();
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_distinct_esis_and_takes_them_back() {
        let mut set = EsiSet::new(10);
        assert_eq!(set.insert(3), Inserted::New);
        assert_eq!(set.insert(3), Inserted::Duplicate);
        assert_eq!(set.insert(100_000), Inserted::New);
        assert_eq!(set.count(), 2);
        set.remove(3);
        set.remove(3);
        assert_eq!(set.count(), 1);
        assert_eq!(set.insert(3), Inserted::New);
    }

    #[test]
    fn scattered_esis_are_capped() {
        let mut set = EsiSet::new(1);
        let full = (0..SPARSE_ESIS_MAX as u32 + 10).map(|i| set.insert(1_000_000 + i)).filter(|i| *i == Inserted::Full).count();
        assert_eq!(full, 10);
        assert_eq!(set.count() as usize, SPARSE_ESIS_MAX);
    }
}
