//! PPO's exponential moving average of the actor's adapter. It lives on the
//! device beside the weights, so a step updates it with two fused ops and
//! nothing crosses the bus; when the preset keeps the optimizer in host
//! memory (`offload_optimizer`, the 24 GB preset) the average goes there
//! too, since such a card has no room for another copy of the adapter. Both
//! places compute `beta * ema + (1 - beta) * value` with the same f32
//! operations, so the choice never changes a result.

use crate::backend::Backend;
use crate::model::param::Param;

/// One average per actor parameter, in the actor's parameter order.
#[derive(Debug)]
pub enum Ema<B: Backend> {
    /// `ema: 0`: no average is kept.
    Off,
    Device(Vec<B::Buf>),
    Host(Vec<Vec<f32>>),
}

impl<B: Backend> Ema<B> {
    /// Starts at the actor's current values; `beta` 0 keeps none.
    pub fn start<'a>(
        be: &B,
        actor: impl Iterator<Item = &'a Param<B>>,
        beta: f64,
        on_host: bool,
    ) -> Self
    where
        B: 'a,
    {
        match (beta > 0.0, on_host) {
            (false, _) => Ema::Off,
            (true, false) => Ema::Device(actor.map(|p| be.duplicate(&p.value)).collect()),
            (true, true) => Ema::Host(actor.map(|p| be.download(&p.value)).collect()),
        }
    }

    /// `ema = beta * ema + (1 - beta) * value` for every actor parameter.
    pub fn update<'a>(&mut self, be: &B, actor: impl Iterator<Item = &'a Param<B>>, beta: f32)
    where
        B: 'a,
    {
        match self {
            Ema::Off => {}
            Ema::Device(avg) => {
                for (e, p) in avg.iter_mut().zip(actor) {
                    be.scale(e, beta);
                    be.axpy(e, 1.0 - beta, &p.value);
                }
            }
            Ema::Host(avg) => {
                for (e, p) in avg.iter_mut().zip(actor) {
                    let value = be.download(&p.value);
                    for (e, &v) in e.iter_mut().zip(&value) {
                        *e = beta * *e + (1.0 - beta) * v;
                    }
                }
            }
        }
    }

    /// The averages on the host, for the checkpoint and the saved model
    /// (empty when off).
    pub fn values(&self, be: &B) -> Vec<Vec<f32>> {
        match self {
            Ema::Off => Vec::new(),
            Ema::Device(avg) => avg.iter().map(|e| be.download(e)).collect(),
            Ema::Host(avg) => avg.clone(),
        }
    }

    /// Puts back the averages of a checkpoint, in parameter order.
    pub fn restore(&mut self, be: &B, values: Vec<Vec<f32>>) {
        match self {
            Ema::Off => {}
            Ema::Device(avg) => {
                for (e, v) in avg.iter_mut().zip(values) {
                    *e = be.upload(&v);
                }
            }
            Ema::Host(avg) => {
                for (e, v) in avg.iter_mut().zip(values) {
                    *e = v;
                }
            }
        }
    }

    pub fn is_on(&self) -> bool {
        !matches!(self, Ema::Off)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::model::weights::HostTensor;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The device and the host average agree bit for bit, and each moves
    /// by `1 - beta` toward the value.
    #[test]
    fn device_and_host_averages_are_the_same_numbers() {
        let mut rng = ChaCha8Rng::seed_from_u64(16);
        let mut random = |n| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
        let start = random(37);
        let mut p = Param::new(&Cpu, "a", &HostTensor::new(vec![37], start.clone()));
        let mut on_device = Ema::start(&Cpu, [&p].into_iter(), 0.9, false);
        let mut on_host = Ema::start(&Cpu, [&p].into_iter(), 0.9, true);
        for _ in 0..3 {
            p.value = random(37);
            on_device.update(&Cpu, [&p].into_iter(), 0.9);
            on_host.update(&Cpu, [&p].into_iter(), 0.9);
        }
        assert_eq!(on_device.values(&Cpu), on_host.values(&Cpu));
        let mut one = Ema::start(&Cpu, [&p].into_iter(), 0.9, false);
        let before = one.values(&Cpu)[0].clone();
        let value = random(37);
        p.value = value.clone();
        one.update(&Cpu, [&p].into_iter(), 0.9);
        for ((e, b), v) in one.values(&Cpu)[0].iter().zip(&before).zip(&value) {
            assert!((e - (0.9 * b + 0.1 * v)).abs() < 1e-6);
        }
        assert!(
            Ema::<Cpu>::start(&Cpu, [&p].into_iter(), 0.0, false)
                .values(&Cpu)
                .is_empty()
        );
    }
}
