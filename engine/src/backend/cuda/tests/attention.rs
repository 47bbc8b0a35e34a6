//! Flash attention forward/backward and decode attention against f64.

use super::reference;
use super::*;
use crate::backend::cuda::{AttentionShape, DecodeShape};

/// Shapes with ragged tiles (seq not a multiple of 32), GQA and MHA, both
/// head dims.
const SHAPES: [AttentionShape; 3] = [
    AttentionShape {
        batch: 2,
        seq: 77,
        q_heads: 4,
        kv_heads: 2,
        head_dim: 64,
    },
    AttentionShape {
        batch: 1,
        seq: 100,
        q_heads: 8,
        kv_heads: 2,
        head_dim: 128,
    },
    AttentionShape {
        batch: 2,
        seq: 33,
        q_heads: 2,
        kv_heads: 2,
        head_dim: 128,
    },
];

/// Each shape unpadded and left-padded: a few positions of padding, and
/// (past the first sequence) all but the last 3, so whole query and key
/// tiles are padding.
fn paddings(s: AttentionShape) -> [Vec<u32>; 2] {
    let padded = (0..s.batch)
        .map(|b| if b == 0 { 5 } else { s.seq as u32 - 3 })
        .collect();
    [vec![0; s.batch], padded]
}

/// lse of the rows that see a key compared; padding rows' must be -inf.
fn assert_lse(got: &[f64], want: &[f64]) {
    let (mut seen_got, mut seen_want) = (Vec::new(), Vec::new());
    for (&g, &w) in got.iter().zip(want) {
        if w == f64::NEG_INFINITY {
            assert_eq!(g, f64::NEG_INFINITY, "a padding row's lse");
        } else {
            seen_got.push(g);
            seen_want.push(w);
        }
    }
    assert_close("lse", &seen_got, &seen_want, F32_TOL);
}

#[test]
fn flash_attention_forward_matches_reference() {
    let Some(dev) = gpu("flash_attn_fwd") else {
        return;
    };
    let mut rng = rng("flash_attn_fwd");
    for (s, starts) in SHAPES.into_iter().flat_map(|s| paddings(s).map(|p| (s, p))) {
        eprintln!("{s:?} kv_start {starts:?}");
        let q = random_bf16(&mut rng, s.q_len(), 1.0);
        let k = random_bf16(&mut rng, s.kv_len(), 1.0);
        let v = random_bf16(&mut rng, s.kv_len(), 1.0);
        let (dq, dk, dv) = (
            dev.upload(&q).unwrap(),
            dev.upload(&k).unwrap(),
            dev.upload(&v).unwrap(),
        );
        let starts_d = dev.upload(&ints(&starts)).unwrap();
        let mut o = poisoned_bf16(&dev, s.q_len());
        let mut lse = poisoned_f32(&dev, s.lse_len());
        dev.flash_attn_fwd(s, &dq, &dk, &dv, &starts_d, &mut o, &mut lse)
            .unwrap();
        let (want_o, want_lse) =
            reference::attention_fwd(s, &widen(&q), &widen(&k), &widen(&v), &starts);
        assert_close("o", &bf16_out(&dev, &o), &want_o, BF16_TOL);
        assert_lse(&f32_out(&dev, &lse), &want_lse);
    }
}

fn ints(starts: &[u32]) -> Vec<i32> {
    starts.iter().map(|&s| s as i32).collect()
}

#[test]
fn flash_attention_backward_matches_reference() {
    let Some(dev) = gpu("flash_attn_bwd") else {
        return;
    };
    let mut rng = rng("flash_attn_bwd");
    for (s, starts) in SHAPES.into_iter().flat_map(|s| paddings(s).map(|p| (s, p))) {
        eprintln!("{s:?} kv_start {starts:?}");
        let q = random_bf16(&mut rng, s.q_len(), 1.0);
        let k = random_bf16(&mut rng, s.kv_len(), 1.0);
        let v = random_bf16(&mut rng, s.kv_len(), 1.0);
        let g = random_bf16(&mut rng, s.q_len(), 1.0);
        let (qd, kd, vd, gd) = (
            dev.upload(&q).unwrap(),
            dev.upload(&k).unwrap(),
            dev.upload(&v).unwrap(),
            dev.upload(&g).unwrap(),
        );
        let starts_d = dev.upload(&ints(&starts)).unwrap();
        let mut o = poisoned_bf16(&dev, s.q_len());
        let mut lse = poisoned_f32(&dev, s.lse_len());
        dev.flash_attn_fwd(s, &qd, &kd, &vd, &starts_d, &mut o, &mut lse)
            .unwrap();
        let mut dq = poisoned_bf16(&dev, s.q_len());
        let mut dk = poisoned_bf16(&dev, s.kv_len());
        let mut dv = poisoned_bf16(&dev, s.kv_len());
        dev.flash_attn_bwd(
            s, &qd, &kd, &vd, &o, &gd, &lse, &starts_d, &mut dq, &mut dk, &mut dv,
        )
        .unwrap();
        let (wq, wk, wv) =
            reference::attention_bwd(s, &widen(&q), &widen(&k), &widen(&v), &widen(&g), &starts);
        assert_close("dq", &bf16_out(&dev, &dq), &wq, BF16_TOL);
        assert_close("dk", &bf16_out(&dev, &dk), &wk, BF16_TOL);
        assert_close("dv", &bf16_out(&dev, &dv), &wv, BF16_TOL);
    }
}

#[test]
fn decode_attention_matches_reference() {
    let Some(dev) = gpu("decode_attn") else {
        return;
    };
    let mut rng = rng("decode_attn");
    for (head_dim, q_heads, kv_heads) in [(128, 8, 2), (64, 4, 4), (128, 32, 8)] {
        let s = DecodeShape {
            batch: 3,
            q_heads,
            kv_heads,
            head_dim,
            capacity: 300,
            max_len: 300,
        };
        let lengths = vec![1, rng.random_range(2..300), 300];
        eprintln!("{s:?} lengths {lengths:?}");
        let q = random_bf16(&mut rng, s.batch * q_heads * head_dim, 1.0);
        let cache_len = s.batch * s.capacity * kv_heads * head_dim;
        let kc = random_bf16(&mut rng, cache_len, 1.0);
        let vc = random_bf16(&mut rng, cache_len, 1.0);
        let mut out = poisoned_bf16(&dev, q.len());
        dev.decode_attn(
            s,
            &dev.upload(&q).unwrap(),
            &dev.upload(&kc).unwrap(),
            &dev.upload(&vc).unwrap(),
            &dev.upload(&lengths).unwrap(),
            &mut out,
        )
        .unwrap();
        let want = reference::decode(
            s.batch,
            q_heads,
            kv_heads,
            head_dim,
            s.capacity,
            &widen(&q),
            &widen(&kc),
            &widen(&vc),
            &lengths,
        );
        assert_close("decode out", &bf16_out(&dev, &out), &want, BF16_TOL);
    }
}

#[test]
fn bad_shapes_are_errors_not_launches() {
    let Some(dev) = gpu("attention shapes") else {
        return;
    };
    let s = AttentionShape {
        batch: 1,
        seq: 8,
        q_heads: 3,
        kv_heads: 2,
        head_dim: 64,
    };
    let q = dev.zeros::<bf16>(s.q_len()).unwrap();
    let k = dev.zeros::<bf16>(s.kv_len()).unwrap();
    let mut o = dev.zeros::<bf16>(s.q_len()).unwrap();
    let mut lse = dev.zeros::<f32>(s.lse_len()).unwrap();
    let starts = dev.zeros::<i32>(s.batch).unwrap();
    let err = dev
        .flash_attn_fwd(s, &q, &k, &k, &starts, &mut o, &mut lse)
        .unwrap_err();
    assert!(err.to_string().contains("invalid arguments"), "{err}");
}
