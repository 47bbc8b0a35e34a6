//! Models at the arena's table, served from one thread.
//!
//! The arena plays its deals on many threads, and each seat of a model asks
//! for an answer at every decision. A model must not be used from two
//! threads at once: on CUDA it is one stream and one cuBLAS handle, and on
//! the CPU its ops already spread over the cores. So the thread that holds
//! the models answers every prompt, while the match runs on a thread pool
//! of its own; a model seat sends its prompt there and waits.
//!
//! The pool has as many threads as a batch has prompts, so that many deals
//! wait on the model at once, and the serving thread answers the prompts
//! that are waiting together, up to a batch per model: one forward pass
//! for many decisions, which is what makes a model at the table fast on
//! a GPU and several times faster on the CPU than one prompt at a time.
//! Answers are greedy and depend on the prompt alone, not on the batch it
//! came in (`tests/tests/arena_batched.rs`), so a match's result does not
//! depend on how its threads interleave or how prompts were batched.
//!
//! The pool is the match's own so that its threads, which wait on answers,
//! never hold up the global pool the CPU backend's ops run on.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::Duration;

use miette::miette;

use super::lm_answerer::LmAnswerer;
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

/// How long the serving thread waits for more prompts to join a batch once
/// one has arrived: short against a forward pass, long enough for the deals
/// that are about to ask.
const GATHER: Duration = Duration::from_micros(300);

/// Runs `play` on a thread pool of its own, handing it one [`ModelSeat`]
/// per model of `models` (in order), while this thread answers the prompts
/// the seats send, up to `batch` of a model's prompts together. Returns
/// what `play` returns, once it has returned and dropped its seats; a panic
/// in `play` is resumed here.
pub fn serve<B, T, F>(
    models: &[&LmAnswerer<'_, B>],
    batch: usize,
    play: F,
) -> Result<T, miette::Report>
where
    B: Backend,
    T: Send,
    F: FnOnce(Vec<ModelSeat>) -> T + Send,
{
    let batch = batch.max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(rayon::current_num_threads().max(batch))
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
        while let Some(waiting) = gather(&questions, batch * models.len()) {
            for (m, lm) in models.iter().enumerate() {
                let (prompts, replies): (Vec<String>, Vec<Sender<String>>) = waiting
                    .iter()
                    .filter(|a| a.model == m)
                    .map(|a| (a.prompt.clone(), a.reply.clone()))
                    .unzip();
                for chunk in (0..prompts.len()).step_by(batch) {
                    let end = (chunk + batch).min(prompts.len());
                    let answers = lm.answer_batch(&prompts[chunk..end]);
                    for (reply, answer) in replies[chunk..end].iter().zip(answers) {
                        // A seat that stopped waiting needs no answer.
                        let _ = reply.send(answer);
                    }
                }
            }
        }
        match game.join() {
            Ok(result) => Ok(result),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// The prompts waiting now: the first to arrive, then any that follow
/// within [`GATHER`] of the last, up to `most`. `None` once every seat is
/// gone.
fn gather(questions: &Receiver<Ask>, most: usize) -> Option<Vec<Ask>> {
    let mut waiting = vec![questions.recv().ok()?];
    while waiting.len() < most {
        match questions.recv_timeout(GATHER) {
            Ok(ask) => waiting.push(ask),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        }
    }
    Some(waiting)
}
