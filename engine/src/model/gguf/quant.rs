//! ggml's tensor element types: their block layouts, dequantization to f32
//! (the formulas of ggml's reference `dequantize_row_*`, in the same f32
//! operation order), and the quantizers `export` writes (f16, bf16, q8_0).

use half::{bf16, f16};

/// The ggml element types this crate reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Bf16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q4K,
    Q5K,
    Q6K,
}

/// Elements of one Q8_0 / Q4_0 / Q4_1 block.
const QK: usize = 32;
/// Elements of one k-quant super-block.
const QK_K: usize = 256;

impl GgmlType {
    /// The type with ggml's numeric id, if supported.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4K,
            13 => GgmlType::Q5K,
            14 => GgmlType::Q6K,
            30 => GgmlType::Bf16,
            _ => return None,
        })
    }

    /// ggml's numeric id.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4K => 12,
            GgmlType::Q5K => 13,
            GgmlType::Q6K => 14,
            GgmlType::Bf16 => 30,
        }
    }

    /// (elements per block, bytes per block).
    pub fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::Bf16 => (1, 2),
            GgmlType::Q8_0 => (QK, 34),
            GgmlType::Q4_0 => (QK, 18),
            GgmlType::Q4_1 => (QK, 20),
            GgmlType::Q4K => (QK_K, 144),
            GgmlType::Q5K => (QK_K, 176),
            GgmlType::Q6K => (QK_K, 210),
        }
    }

    /// Bytes of `n` elements, or `None` when `n` is not a whole number of
    /// blocks (or overflows).
    pub fn bytes_of(self, n: u64) -> Option<u64> {
        let (elems, bytes) = self.block();
        n.is_multiple_of(elems as u64)
            .then(|| (n / elems as u64).checked_mul(bytes as u64))?
    }
}

fn half_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Dequantizes `data` (a whole number of blocks of `ty`) into `out`, whose
/// length is the element count.
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) {
    let (elems, bytes) = ty.block();
    for (block, y) in data.chunks_exact(bytes).zip(out.chunks_exact_mut(elems)) {
        match ty {
            GgmlType::F32 => y[0] = f32::from_le_bytes([block[0], block[1], block[2], block[3]]),
            GgmlType::F16 => y[0] = half_at(block, 0),
            GgmlType::Bf16 => y[0] = bf16::from_le_bytes([block[0], block[1]]).to_f32(),
            GgmlType::Q8_0 => q8_0(block, y),
            GgmlType::Q4_0 => q4_0(block, y),
            GgmlType::Q4_1 => q4_1(block, y),
            GgmlType::Q4K => q4_k(block, y),
            GgmlType::Q5K => q5_k(block, y),
            GgmlType::Q6K => q6_k(block, y),
        }
    }
}

fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    for (v, &q) in y.iter_mut().zip(&b[2..34]) {
        *v = f32::from(q as i8) * d;
    }
}

fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    let (lo, hi) = y.split_at_mut(QK / 2);
    for (j, &q) in b[2..18].iter().enumerate() {
        lo[j] = (f32::from(q & 0xF) - 8.0) * d;
        hi[j] = (f32::from(q >> 4) - 8.0) * d;
    }
}

fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (half_at(b, 0), half_at(b, 2));
    let (lo, hi) = y.split_at_mut(QK / 2);
    for (j, &q) in b[4..20].iter().enumerate() {
        lo[j] = f32::from(q & 0xF) * d + m;
        hi[j] = f32::from(q >> 4) * d + m;
    }
}

/// The 6-bit scale and min of sub-block `j` in a k-quant's 12 packed bytes.
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    let (d, m) = if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    };
    (f32::from(d), f32::from(m))
}

fn q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (half_at(b, 0), half_at(b, 2));
    let scales = &b[4..16];
    let qs = &b[16..144];
    for (chunk, (q, out)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, m1, d2, m2) = (d * sc1, dmin * m1, d * sc2, dmin * m2);
        let (lo, hi) = out.split_at_mut(32);
        for l in 0..32 {
            lo[l] = d1 * f32::from(q[l] & 0xF) - m1;
            hi[l] = d2 * f32::from(q[l] >> 4) - m2;
        }
    }
}

fn q5_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (half_at(b, 0), half_at(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for (chunk, (q, out)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, m1, d2, m2) = (d * sc1, dmin * m1, d * sc2, dmin * m2);
        let (u1, u2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
        let (lo, hi) = out.split_at_mut(32);
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16.0 } else { 0.0 };
            let h2 = if qh[l] & u2 != 0 { 16.0 } else { 0.0 };
            lo[l] = d1 * (f32::from(q[l] & 0xF) + h1) - m1;
            hi[l] = d2 * (f32::from(q[l] >> 4) + h2) - m2;
        }
    }
}

fn q6_k(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 208);
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..128 + 32 * half + 32];
        let sc = &b[192 + 8 * half..192 + 8 * half + 8];
        let out = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q = |low: u8, shift: u32| f32::from(low | (((qh[l] >> shift) & 3) << 4)) - 32.0;
            let s = |k: usize| d * f32::from(sc[is + k] as i8);
            out[l] = s(0) * q(ql[l] & 0xF, 0);
            out[l + 32] = s(2) * q(ql[l + 32] & 0xF, 2);
            out[l + 64] = s(4) * q(ql[l] >> 4, 4);
            out[l + 96] = s(6) * q(ql[l + 32] >> 4, 6);
        }
    }
}

/// Encodes `x` as `ty`: f32, f16, bf16 (round to nearest even) or q8_0
/// (per block of 32: scale max|x|/127, values rounded to nearest, ties away
/// from zero, as ggml's reference quantizer). `x.len()` must be a whole
/// number of blocks; other types are not written by this crate.
pub fn quantize(ty: GgmlType, x: &[f32]) -> Option<Vec<u8>> {
    let bytes = usize::try_from(ty.bytes_of(x.len() as u64)?).ok()?;
    let mut out = Vec::with_capacity(bytes);
    match ty {
        GgmlType::F32 => x.iter().for_each(|v| out.extend(v.to_le_bytes())),
        GgmlType::F16 => x
            .iter()
            .for_each(|v| out.extend(f16::from_f32(*v).to_le_bytes())),
        GgmlType::Bf16 => x
            .iter()
            .for_each(|v| out.extend(bf16::from_f32(*v).to_le_bytes())),
        GgmlType::Q8_0 => {
            for block in x.chunks_exact(QK) {
                let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
                out.extend(f16::from_f32(d).to_le_bytes());
                out.extend(block.iter().map(|v| (v * inv).round() as i8 as u8));
            }
        }
        _ => return None,
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Random blocks and their values as llama.cpp's gguf-py dequantizes
    /// them (tests/golden/gguf/make_quant_fixture.py).
    const FIXTURE: &str = include_str!("../../../../tests/golden/gguf/quant.json");

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn dequantize_matches_llama_cpp_reference_on_random_blocks() {
        let fixture: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
        for (name, ty) in [
            ("F32", GgmlType::F32),
            ("F16", GgmlType::F16),
            ("BF16", GgmlType::Bf16),
            ("Q8_0", GgmlType::Q8_0),
            ("Q4_0", GgmlType::Q4_0),
            ("Q4_1", GgmlType::Q4_1),
            ("Q4_K", GgmlType::Q4K),
            ("Q5_K", GgmlType::Q5K),
            ("Q6_K", GgmlType::Q6K),
        ] {
            let case = &fixture[name];
            let raw = hex(case["raw_hex"].as_str().unwrap());
            let want: Vec<f32> = case["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(
                ty.bytes_of(want.len() as u64),
                Some(raw.len() as u64),
                "{name}"
            );
            assert!(
                want.iter().any(|v| *v != 0.0),
                "{name}: fixture is all zeros"
            );
            let mut got = vec![f32::NAN; want.len()];
            dequantize(ty, &raw, &mut got);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                // Same formula, f32 throughout; only operation order may differ.
                assert!(
                    (g - w).abs() <= 1e-6 * w.abs().max(1e-3),
                    "{name}[{i}]: got {g}, llama.cpp {w}"
                );
            }
        }
    }

    #[test]
    fn q8_0_quantizer_matches_llama_cpp_and_round_trips() {
        let fixture: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
        let case = &fixture["quantize_q8_0"];
        let x: Vec<f32> = case["input"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let ours = quantize(GgmlType::Q8_0, &x).unwrap();
        assert_eq!(ours, hex(case["raw_hex"].as_str().unwrap()));
        let mut back = vec![0.0; x.len()];
        dequantize(GgmlType::Q8_0, &ours, &mut back);
        for block in 0..x.len() / QK {
            let r = block * QK..(block + 1) * QK;
            let amax = x[r.clone()].iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for i in r {
                // Half a quantization step, plus the f16 rounding of the scale.
                assert!((back[i] - x[i]).abs() <= amax / 127.0 * 0.5 + amax * 1e-3);
            }
        }
        assert!(quantize(GgmlType::Q8_0, &x[..31]).is_none());
        assert!(quantize(GgmlType::Q4K, &x).is_none());
    }
}
