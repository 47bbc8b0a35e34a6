//! Preflop tables: the equity of every starting-hand class against every
//! other (169 x 169) and the strength order of classes that position ranges
//! are cut from.
//!
//! The table is estimated once per process by Monte Carlo with a fixed seed
//! (1,000 deals per pair of classes, suits drawn at random): it is a
//! constant of the labeler, not a source of label noise, so preflop labels
//! do not depend on the labeler's seed. Card removal between the two hands
//! is averaged over suits; its per-cell error (about 0.016) averages out
//! over a range of classes.

use std::sync::OnceLock;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::cards::CardSet;
use super::equity::deal;
use super::eval::evaluate;
use super::range::HandClass;

const DEALS_PER_PAIR: u32 = 1000;
const TABLE_SEED: u64 = 0x05EE_D0F7_AB1E;

pub struct PreflopTable {
    /// `equity[h * 169 + v]`: class `h` against class `v`, ties halved.
    equity: Vec<f32>,
    /// Class indices strongest first (by equity against a random hand).
    order: Vec<usize>,
    /// Position of each class in `order`.
    rank: Vec<usize>,
}

/// Weights per class (the fraction of that class's combos in a range).
pub type ClassWeights = [f32; 169];

/// One table cell: class `h` against class `v` over its own seeded deals.
fn cell(h: usize, v: usize) -> f32 {
    let mut rng = ChaCha8Rng::seed_from_u64(TABLE_SEED);
    rng.set_stream((h * 169 + v) as u64);
    let (hc, vc) = (
        HandClass::from_index(h).combos(),
        HandClass::from_index(v).combos(),
    );
    let mut won = 0.0f64;
    let mut n = 0;
    while n < DEALS_PER_PAIR {
        let a = CardSet::of(&hc[rng.random_range(0..hc.len())]);
        let b = CardSet::of(&vc[rng.random_range(0..vc.len())]);
        if a.0 & b.0 != 0 {
            continue;
        }
        let board = deal(&mut rng, a.0 | b.0, 5);
        let (x, y) = (
            evaluate(CardSet(a.0 | board)),
            evaluate(CardSet(b.0 | board)),
        );
        won += if x > y {
            1.0
        } else if x == y {
            0.5
        } else {
            0.0
        };
        n += 1;
    }
    (won / f64::from(DEALS_PER_PAIR)) as f32
}

impl PreflopTable {
    pub fn get() -> &'static PreflopTable {
        static TABLE: OnceLock<PreflopTable> = OnceLock::new();
        TABLE.get_or_init(PreflopTable::build)
    }

    fn build() -> PreflopTable {
        let pairs: Vec<(usize, usize)> = (0..169)
            .flat_map(|h| (h..169).map(move |v| (h, v)))
            .collect();
        // Plain scoped threads, not rayon: the table is first needed from
        // inside rayon jobs (labelling, arena chunks), and a rayon worker
        // that waits here could steal another job that waits on this same
        // initialisation, a deadlock.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per = pairs.len().div_ceil(threads);
        let cells: Vec<f32> = std::thread::scope(|scope| {
            let handles: Vec<_> = pairs
                .chunks(per)
                .map(|chunk| {
                    scope
                        .spawn(move || chunk.iter().map(|&(h, v)| cell(h, v)).collect::<Vec<f32>>())
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        let mut equity = vec![0.5f32; 169 * 169];
        for (&(h, v), &e) in pairs.iter().zip(&cells) {
            if h == v {
                equity[h * 169 + v] = 0.5;
            } else {
                equity[h * 169 + v] = e;
                equity[v * 169 + h] = 1.0 - e;
            }
        }
        let vs_random: Vec<f64> = (0..169)
            .map(|h| {
                (0..169)
                    .map(|v| {
                        f64::from(HandClass::from_index(v).combo_count())
                            * f64::from(equity[h * 169 + v])
                    })
                    .sum::<f64>()
                    / 1326.0
            })
            .collect();
        let mut order: Vec<usize> = (0..169).collect();
        order.sort_by(|&a, &b| vs_random[b].total_cmp(&vs_random[a]));
        let mut rank = vec![0; 169];
        for (i, &class) in order.iter().enumerate() {
            rank[class] = i;
        }
        PreflopTable {
            equity,
            order,
            rank,
        }
    }

    pub fn equity(&self, hero: HandClass, villain: usize) -> f32 {
        self.equity[hero.index() * 169 + villain]
    }

    /// Class `class`'s place in the strength order (0 = aces).
    pub fn rank(&self, class: HandClass) -> usize {
        self.rank[class.index()]
    }

    /// Fraction of all combos at least as strong as `class` (AA is 6/1326).
    pub fn percentile(&self, class: HandClass) -> f64 {
        let before: u32 = self.order[..=self.rank(class)]
            .iter()
            .map(|&c| HandClass::from_index(c).combo_count())
            .sum();
        f64::from(before) / 1326.0
    }

    /// The classes between the `lo` and `hi` fractions of all combos in
    /// strength order, e.g. `band(0.0, 0.15)` is the top 15%; a class cut
    /// by a boundary gets a partial weight.
    pub fn band(&self, lo: f64, hi: f64) -> ClassWeights {
        let mut weights = [0.0f32; 169];
        let mut start = 0.0;
        for &class in &self.order {
            let size = f64::from(HandClass::from_index(class).combo_count()) / 1326.0;
            let end = start + size;
            let overlap = (end.min(hi) - start.max(lo)).max(0.0);
            weights[class] = (overlap / size) as f32;
            start = end;
        }
        weights
    }

    /// The strongest `fraction` (by combos) of `range`, as weights.
    pub fn top_of(&self, range: &ClassWeights, fraction: f64) -> ClassWeights {
        let total: f64 = combos(range);
        let mut left = total * fraction.clamp(0.0, 1.0);
        let mut out = [0.0f32; 169];
        for &class in &self.order {
            let have =
                f64::from(range[class]) * f64::from(HandClass::from_index(class).combo_count());
            let take = have.min(left);
            if have > 0.0 {
                out[class] = (f64::from(range[class]) * take / have) as f32;
            }
            left -= take;
        }
        out
    }

    /// Everything in `range` but its strongest `fraction`.
    pub fn below_top_of(&self, range: &ClassWeights, fraction: f64) -> ClassWeights {
        let top = self.top_of(range, fraction);
        let mut out = *range;
        for (o, t) in out.iter_mut().zip(top) {
            *o -= t;
        }
        out
    }

    /// Hero's equity against a weighted range of classes.
    pub fn equity_vs(&self, hero: HandClass, range: &ClassWeights) -> f64 {
        let (mut num, mut den) = (0.0, 0.0);
        for (v, &w) in range.iter().enumerate() {
            if w > 0.0 {
                let weight = f64::from(w) * f64::from(HandClass::from_index(v).combo_count());
                num += weight * f64::from(self.equity(hero, v));
                den += weight;
            }
        }
        if den > 0.0 { num / den } else { 0.5 }
    }
}

/// Number of combos in a weighted class range.
pub fn combos(range: &ClassWeights) -> f64 {
    range
        .iter()
        .enumerate()
        .map(|(c, &w)| f64::from(w) * f64::from(HandClass::from_index(c).combo_count()))
        .sum()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::poker::cards::parse_hole;
    use crate::poker::equity::{Holding, equity};

    fn class(t: &str) -> HandClass {
        HandClass::of(parse_hole(t).unwrap())
    }

    #[test]
    fn strength_order_and_bands() {
        let table = PreflopTable::get();
        assert_eq!(table.rank(class("AsAd")), 0);
        assert!(table.rank(class("KsKd")) < table.rank(class("AsKs")));
        assert!(table.percentile(class("7s2d")) > 0.95);
        let top = table.band(0.0, 0.15);
        assert!((combos(&top) - 0.15 * 1326.0).abs() < 1e-3);
        let half = table.top_of(&top, 0.5);
        assert!((combos(&half) - 0.075 * 1326.0).abs() < 1e-3);
    }

    /// Table cells against the average over every suit combination (each by
    /// 20,000-deal Monte Carlo) for random class pairs: a cell holds 1,000
    /// deals, so the bound is 4 of its standard errors (0.016) plus 0.01
    /// for the reference's own error.
    #[test]
    fn cells_match_exact_equity() {
        let table = PreflopTable::get();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..3 {
            let (h, v) = (rng.random_range(0..169), rng.random_range(0..169));
            let (hc, vc) = (HandClass::from_index(h), HandClass::from_index(v));
            let (mut sum, mut n) = (0.0, 0.0);
            for a in hc.combos() {
                for b in vc.combos() {
                    if CardSet::of(&a).0 & CardSet::of(&b).0 == 0 {
                        let eq = equity(&[Holding::Hand(a), Holding::Hand(b)], &[], 20_000, 1, 0)
                            .unwrap();
                        sum += eq.equity[0];
                        n += 1.0;
                    }
                }
            }
            let reference = sum / n;
            let cell = f64::from(table.equity(hc, v));
            assert!(
                (cell - reference).abs() < 4.0 * 0.016 + 0.01,
                "{hc} vs {vc}: {cell} vs {reference}"
            );
        }
    }
}
