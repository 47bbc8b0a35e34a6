//! The expert beats the weak baselines on duplicate deals with the whole
//! 95% interval above zero (the full 20,000-hand figures are in
//! engine/PERF.md; these shorter matches keep the suite fast).

use poker_pipe::poker::arena::play_match;
use poker_pipe::poker::bots::{Player, PromptPlayer, bot};
use poker_pipe::poker::spot::PromptStyle;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn make(name: &'static str) -> impl Fn(u64) -> Box<dyn Player> + Sync {
    move |seed| bot(name, seed).unwrap_or_else(|| Box::new(poker_pipe::poker::bots::CallingStation))
}

#[test]
fn expert_beats_random_and_calling_station() -> TestResult {
    // Random play swings wildly (random all-ins), so it needs more hands.
    for (opponent, hands) in [("random", 4000), ("calling-station", 1000)] {
        let result = play_match(&make("expert"), &make(opponent), hands, 11)?;
        assert_eq!(result.hands, hands);
        assert!(result.ci95[0] > 0.0, "expert vs {opponent}: {result:?}");
    }
    Ok(())
}

#[test]
fn a_prompt_player_that_always_calls_matches_the_calling_station() -> TestResult {
    // The language-model path: prompt text in, answer text out. An answer
    // of "call" when checking is free is illegal and becomes a check, so
    // this player plays exactly like the calling station.
    let prompt_caller = |_seed| -> Box<dyn Player> {
        Box::new(PromptPlayer::new(
            "always-call",
            PromptStyle::Compact,
            |prompt: &str| {
                if prompt.contains(" call ") {
                    "call".to_string()
                } else {
                    "check".to_string()
                }
            },
        ))
    };
    let via_prompts = play_match(&make("tight-aggressive"), &prompt_caller, 200, 4)?;
    let direct = play_match(&make("tight-aggressive"), &make("calling-station"), 200, 4)?;
    assert_eq!(via_prompts.bb_per_100, direct.bb_per_100);
    Ok(())
}
