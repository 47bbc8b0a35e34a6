//! Models at the arena's table, served from one thread.
//!
//! The arena plays its deals on many threads, and each seat of a model asks
//! for an answer at every decision. A model must not be used from two
//! threads at once: on CUDA it is one stream and one cuBLAS handle, and on
//! the CPU its ops already spread over the cores. So the thread that holds
//! the models answers every prompt, one at a time, while the match runs on
//! a thread pool of its own; a model seat sends its prompt there and waits.
//! Answers are greedy and depend on the prompt alone, so a match's result
//! does not depend on how its threads interleave.
//!
//! The pool is the match's own so that its threads, which wait on answers,
//! never hold up the global pool the CPU backend's ops run on.

use std::sync::mpsc::{Sender, channel};

use miette::miette;

use super::eval::LmAnswerer;
use crate::backend::Backend;
use crate::poker::bots::{Player, PromptPlayer};
use crate::poker::spot::PromptStyle;

/// A prompt for model `model`, and where its answer goes.
struct Ask {
    model: usize,
    prompt: String,
    reply: Sender<String>,
}

/// Makes seats for one served model; as many as the match wants, on any
/// thread.
#[derive(Clone)]
pub struct ModelSeat {
    model: usize,
    asks: Sender<Ask>,
}

impl ModelSeat {
    /// A seat at the table: every decision's prompt in `style`, answered by
    /// the model. If the serving side is gone the answer is empty, which
    /// the arena counts as illegal.
    pub fn player(&self, style: PromptStyle) -> Box<dyn Player> {
        let seat = self.clone();
        Box::new(PromptPlayer::new("model", style, move |prompt: &str| {
            seat.ask(prompt)
        }))
    }

    fn ask(&self, prompt: &str) -> String {
        let (reply, answer) = channel();
        let ask = Ask {
            model: self.model,
            prompt: prompt.to_string(),
            reply,
        };
        if self.asks.send(ask).is_err() {
            return String::new();
        }
        answer.recv().unwrap_or_default()
    }
}

/// Runs `play` on a thread pool of its own, handing it one [`ModelSeat`]
/// per model of `models` (in order), while this thread answers every
/// prompt the seats send. Returns what `play` returns, once it has
/// returned and dropped its seats; a panic in `play` is resumed here.
pub fn serve<B, T, F>(models: &[&LmAnswerer<'_, B>], play: F) -> Result<T, miette::Report>
where
    B: Backend,
    T: Send,
    F: FnOnce(Vec<ModelSeat>) -> T + Send,
{
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(rayon::current_num_threads())
        .thread_name(|i| format!("arena-{i}"))
        .build()
        .map_err(|e| miette!("cannot start the arena's threads: {e}"))?;
    let (asks, questions) = channel::<Ask>();
    let seats: Vec<ModelSeat> = (0..models.len())
        .map(|model| ModelSeat {
            model,
            asks: asks.clone(),
        })
        .collect();
    drop(asks);
    std::thread::scope(|scope| {
        let game = scope.spawn(move || pool.install(move || play(seats)));
        for ask in questions {
            let answer = models[ask.model].answer(&ask.prompt);
            // A seat that stopped waiting needs no answer.
            let _ = ask.reply.send(answer);
        }
        match game.join() {
            Ok(result) => Ok(result),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
