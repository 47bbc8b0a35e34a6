//! A named parameter on the device and its gradient, present only while
//! the parameter is being trained. Frozen weights (the base, and adapters
//! only read, as PPO's reference and reward model) are stored in the
//! backend's weight dtype (bf16 under mixed precision); adapters and heads
//! as loaded and every trained parameter are f32, so AdamW's small steps are
//! not rounded away.

use crate::backend::{Backend, Dtype};

use super::weights::HostTensor;

#[derive(Debug)]
pub struct Param<B: Backend> {
    /// The Hugging Face / PEFT tensor name.
    pub name: String,
    pub shape: Vec<usize>,
    pub value: B::Buf,
    /// `Some` while trainable; backward passes accumulate into it.
    pub grad: Option<B::Buf>,
}

impl<B: Backend> Param<B> {
    /// An f32 parameter (an adapter or a head), not trained until
    /// [`Param::set_trainable`].
    pub fn new(be: &B, name: impl Into<String>, t: &HostTensor) -> Self {
        Param {
            name: name.into(),
            shape: t.shape.clone(),
            value: be.upload(&t.data),
            grad: None,
        }
    }

    /// A frozen weight (of the base model, or an adapter no role trains),
    /// stored in the backend's weight dtype.
    pub fn frozen(be: &B, name: impl Into<String>, t: &HostTensor) -> Self {
        Param {
            name: name.into(),
            shape: t.shape.clone(),
            value: be.upload_weight(&t.data),
            grad: None,
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Turns training of this parameter on (an f32 master copy and a zero
    /// gradient) or off. Turning it off keeps the values as they are: what
    /// was trained is not rounded when it stops training.
    pub fn set_trainable(&mut self, be: &B, on: bool) {
        if on {
            self.store_as(be, Dtype::F32);
        }
        self.grad = on.then(|| be.zeros(self.numel()));
    }

    /// Keeps the values stored as `dtype` (rounded to nearest even when
    /// narrowing).
    pub fn store_as(&mut self, be: &B, dtype: Dtype) {
        let value = std::mem::replace(&mut self.value, be.zeros(0));
        self.value = be.to_dtype(value, dtype);
    }

    pub fn to_host(&self, be: &B) -> HostTensor {
        HostTensor::new(self.shape.clone(), be.download(&self.value))
    }
}
