//! Storage formats of backend buffers, and the one rounding every backend
//! narrows with.

use half::bf16;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a buffer stores per value. Compute is f32 either way: a bf16 buffer
/// is widened (exactly) where an op reads it.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// 32-bit floats everywhere (the CPU reference).
    #[default]
    F32,
    /// Frozen weights stored in bfloat16, GEMM and layer inputs and outputs
    /// rounded to bfloat16, sums and trainable parameters in f32: mixed
    /// precision as the CUDA kernels do it, also on the CPU.
    Bf16,
}

impl Dtype {
    /// Bytes per stored value.
    pub fn bytes(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::Bf16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `--dtype` on the command line.
impl std::str::FromStr for Dtype {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Dtype::F32),
            "bf16" => Ok(Dtype::Bf16),
            _ => Err(format!("unknown dtype `{s}` (use f32 or bf16)")),
        }
    }
}

/// `x` rounded to the nearest bfloat16 (ties to even), as CUDA's
/// `__float2bfloat16_rn`; NaN stays NaN.
#[inline]
pub fn round_bf16(x: f32) -> f32 {
    bf16::from_f32(x).to_f32()
}

/// Every value of `xs` rounded to bfloat16 in place.
pub fn round_all(xs: &mut [f32]) {
    for x in xs {
        *x = round_bf16(*x);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// An independent reference: add half an ulp of bf16 (minus one when the
    /// kept part is even) to the f32 bits and truncate.
    fn rne_by_bits(x: f32) -> f32 {
        let bits = x.to_bits();
        let lsb = (bits >> 16) & 1;
        f32::from_bits((bits.wrapping_add(0x7fff + lsb)) & 0xffff_0000)
    }

    #[test]
    fn rounding_is_to_nearest_even_on_random_and_tie_values() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..100_000 {
            let x = f32::from_bits(rng.random::<u32>());
            if !x.is_finite() || x.abs() > 3.0e38 {
                continue;
            }
            assert_eq!(round_bf16(x).to_bits(), rne_by_bits(x).to_bits(), "{x:e}");
        }
        // Exact ties: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7 and goes
        // to the even 1; 1 + 3 * 2^-8 goes up to the even 1 + 2^-6.
        assert_eq!(round_bf16(1.0 + 2f32.powi(-8)), 1.0);
        assert_eq!(round_bf16(1.0 + 3.0 * 2f32.powi(-8)), 1.0 + 2f32.powi(-6));
        assert!(round_bf16(f32::NAN).is_nan());
    }
}
