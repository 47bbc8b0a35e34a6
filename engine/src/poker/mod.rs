//! No-limit hold'em: cards, evaluator, equity, scenarios and prompt text, the
//! expert labeler, bots, arena and statistics. Stands alone.

pub mod arena;
pub mod bots;
pub mod cards;
pub mod dataset;
pub mod equity;
pub mod eval;
pub mod expert;
pub mod game;
pub mod played;
pub mod preflop;
pub mod range;
pub mod scenario;
pub mod spot;
pub mod trace;
