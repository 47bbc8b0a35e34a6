//! Decision traces: every decision of one player in a match, with what the
//! expert would have done and what the difference costs by its EVs. The
//! way to see why a model loses to a bot: sort the trace by regret.

use serde::Serialize;

use super::bots::Player;
use super::expert::Expert;
use super::game::Action;
use super::spot::{PromptStyle, Spot, render};

/// One decision of a traced player.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    pub spot_type: String,
    /// The spot as a prompt in the traced player's style.
    pub prompt: String,
    /// The action taken (an illegal answer shows as the check or fold
    /// that replaced it).
    pub action: String,
    /// The expert's best action.
    pub expert: String,
    /// The expert's EV of its best action minus that of the action taken,
    /// in big blinds (0 when they agree).
    pub regret_bb: f64,
}

/// A player whose decisions are judged by the expert and kept in order.
pub struct Traced {
    inner: Box<dyn Player>,
    expert: Expert,
    style: PromptStyle,
    log: Vec<Decision>,
}

impl Traced {
    pub fn new(inner: Box<dyn Player>, style: PromptStyle) -> Self {
        Traced {
            inner,
            expert: Expert::default(),
            style,
            log: Vec::new(),
        }
    }
}

impl Player for Traced {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn act(&mut self, spot: &Spot) -> Action {
        let action = self.inner.act(spot);
        let judged = self.expert.judge(spot);
        let ev = judged
            .values
            .iter()
            .find(|v| v.action == action)
            .map_or_else(|| self.expert.ev(spot, action), |v| v.ev);
        self.log.push(Decision {
            spot_type: spot.spot_type().to_string(),
            prompt: render(spot, self.style),
            action: action.answer(),
            expert: judged.best_action().answer(),
            regret_bb: (judged.best_ev() - ev).max(0.0),
        });
        action
    }

    fn illegal_answers(&self) -> u64 {
        self.inner.illegal_answers()
    }

    fn take_trace(&mut self) -> Vec<Decision> {
        std::mem::take(&mut self.log)
    }
}

/// Total regret and decisions per spot type, the costliest first.
pub fn regret_by_spot_type(trace: &[Decision]) -> Vec<(String, f64, usize)> {
    let mut by: std::collections::BTreeMap<&str, (f64, usize)> = Default::default();
    for d in trace {
        let e = by.entry(&d.spot_type).or_default();
        e.0 += d.regret_bb;
        e.1 += 1;
    }
    let mut out: Vec<(String, f64, usize)> = by
        .into_iter()
        .map(|(k, (r, n))| (k.to_string(), r, n))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::poker::arena::play_match;
    use crate::poker::bots::{ExpertPlayer, bot};

    #[test]
    fn the_expert_traced_has_no_regret_and_a_bot_has_some() {
        // The traced player's expert samples the same flop runouts as the
        // one judging it, so they agree on every decision.
        let expert_player = |_| -> Box<dyn Player> {
            Box::new(ExpertPlayer {
                expert: Expert::default(),
            })
        };
        let traced_expert = |s| -> Box<dyn Player> {
            Box::new(Traced::new(expert_player(s), PromptStyle::Compact))
        };
        let opponent = |seed| bot("random", seed).unwrap();
        let plain = play_match(&expert_player, &opponent, 200, 3).unwrap();
        let expert = play_match(&traced_expert, &opponent, 200, 3).unwrap();
        // Tracing watches; it does not change the match.
        assert_eq!(plain.bb_per_100, expert.bb_per_100);
        assert!(plain.trace.is_empty());
        assert!(expert.trace.len() >= 200, "{}", expert.trace.len());
        assert!(
            expert
                .trace
                .iter()
                .all(|d| d.regret_bb == 0.0 && d.action == d.expert)
        );

        let traced_station = |s| -> Box<dyn Player> {
            Box::new(Traced::new(
                bot("calling-station", s).unwrap(),
                PromptStyle::Compact,
            ))
        };
        let station = play_match(&traced_station, &opponent, 200, 3).unwrap();
        let total: f64 = station.trace.iter().map(|d| d.regret_bb).sum();
        assert!(total > 10.0, "{total}");
        let table = regret_by_spot_type(&station.trace);
        assert_eq!(
            table.iter().map(|t| t.2).sum::<usize>(),
            station.trace.len()
        );
        assert!(table.windows(2).all(|w| w[0].1 >= w[1].1));
        assert!((table.iter().map(|t| t.1).sum::<f64>() - total).abs() < 1e-6);
    }
}
