//! Spots from played hands: the expert sits in one seat of a heads-up hand
//! against a baseline bot, and one of the decisions it faced becomes a
//! record. Scripted lines ([`super::scenario`]) cover what sensible
//! opponents do; played hands add the lines the arena's bots actually take
//! (random sizes, shoves with anything, calls with anything), in the
//! proportions a match produces them, so a model is taught the spots it
//! will be judged in.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::arena::{deal_from, play_hand};
use super::bots::{Player, bot};
use super::expert::{Expert, Judgement};
use super::game::Action;
use super::spot::Spot;

/// The expert, remembering one of the spots it acted in with its
/// judgement, chosen uniformly by reservoir sampling (the number of
/// decisions is known only at the end).
struct Recorder<'a> {
    expert: Expert,
    rng: &'a mut ChaCha8Rng,
    seen: u64,
    kept: Option<(Spot, Judgement)>,
}

impl Player for Recorder<'_> {
    fn name(&self) -> String {
        "expert".into()
    }
    fn act(&mut self, spot: &Spot) -> Action {
        let judged = self.expert.judge(spot);
        let action = judged.best_action();
        self.seen += 1;
        if self.rng.random_range(0..self.seen) == 0 {
            self.kept = Some((spot.clone(), judged));
        }
        action
    }
}

/// A spot drawn from a played hand, with `expert`'s judgement of it (the
/// label, already computed while playing) and the RNG to draw on with.
pub struct Played {
    pub spot: Spot,
    pub judged: Judgement,
    pub rng: ChaCha8Rng,
}

/// Spot number `index` of the played sequence for `seed`: a fresh deal,
/// opponent (from `opponents`, bot names) and seat per try, until the expert
/// had a decision (in the big blind it has none when the button folds).
/// Each index has its own RNG stream, so records are drawn in parallel.
pub fn played_spot(seed: u64, index: u64, opponents: &[String], expert: Expert) -> Option<Played> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x091A_7ED0);
    rng.set_stream(index);
    loop {
        let name = &opponents[rng.random_range(0..opponents.len())];
        let mut villain = bot(name, rng.random())?;
        let cards = deal_from(&mut rng);
        let on_button = rng.random_bool(0.5);
        let mut hero_rng = ChaCha8Rng::seed_from_u64(rng.random());
        let mut hero = Recorder {
            expert,
            rng: &mut hero_rng,
            seen: 0,
            kept: None,
        };
        let played = if on_button {
            play_hand(&mut hero, villain.as_mut(), &cards, index)
        } else {
            play_hand(villain.as_mut(), &mut hero, &cards, index)
        };
        // Bots and the expert answer legally and chips are conserved by
        // the rules engine, so a failed hand is a bug; skip it rather than
        // stop a dataset over it.
        if let (Ok(_), Some((spot, judged))) = (played, hero.kept) {
            return Some(Played { spot, judged, rng });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::poker::game::Street;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn same_index_same_spot_and_every_street_occurs() {
        let opponents = names(&["random", "calling-station"]);
        let expert = Expert::default();
        let mut streets = [0usize; 4];
        for i in 0..300 {
            let a = played_spot(3, i, &opponents, expert).unwrap();
            let b = played_spot(3, i, &opponents, expert).unwrap();
            assert_eq!(a.spot, b.spot);
            // The judgement kept while playing is the labeler's.
            assert_eq!(a.judged.values, expert.judge(&a.spot).values);
            let a = a.spot;
            assert!(!a.options().is_empty());
            let street = match a.street {
                Street::Preflop => 0,
                Street::Flop => 1,
                Street::Turn => 2,
                Street::River => 3,
            };
            streets[street] += 1;
        }
        // A calling station takes half the hands the expert plays to the
        // river; every street must show up in 300 records.
        assert!(streets.iter().all(|&n| n > 0), "{streets:?}");
    }

    #[test]
    fn a_random_opponent_makes_the_expert_face_shoves() {
        let opponents = names(&["random"]);
        let expert = Expert::default();
        let shoves = (0..400)
            .filter(|&i| {
                let spot = played_spot(5, i, &opponents, expert).unwrap().spot;
                spot.to_call >= spot.hero_stack
            })
            .count();
        assert!(shoves > 10, "only {shoves} of 400 spots face an all in");
    }

    #[test]
    fn an_unknown_opponent_is_none() {
        assert!(played_spot(1, 0, &names(&["nobody"]), Expert::default()).is_none());
    }
}
