//! A named parameter on the device and its gradient, present only while
//! the parameter is being trained.

use crate::backend::Backend;

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
    pub fn new(be: &B, name: impl Into<String>, t: &HostTensor) -> Self {
        Param {
            name: name.into(),
            shape: t.shape.clone(),
            value: be.upload(&t.data),
            grad: None,
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Turns training of this parameter on (a zero gradient) or off.
    pub fn set_trainable(&mut self, be: &B, on: bool) {
        self.grad = on.then(|| be.zeros(self.numel()));
    }

    pub fn to_host(&self, be: &B) -> HostTensor {
        HostTensor::new(self.shape.clone(), be.download(&self.value))
    }
}
