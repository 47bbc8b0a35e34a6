//! RMSNorm, RoPE, SwiGLU and embedding against f64.

use super::reference;
use super::*;
use crate::backend::cuda::{Llama3Scaling, rope_inv_freq};

#[test]
fn rmsnorm_forward_and_backward_match_reference() {
    let Some(dev) = gpu("rmsnorm") else { return };
    let mut rng = rng("rmsnorm");
    let eps = 1e-5;
    for (rows, width) in [(37, 1000), (130, 4096)] {
        eprintln!("rows {rows} width {width}");
        let x = random_bf16(&mut rng, rows * width, 2.0);
        let w = random_bf16(&mut rng, width, 1.5);
        let dy = random_bf16(&mut rng, rows * width, 1.0);
        let (xd, wd, dyd) = (
            dev.upload(&x).unwrap(),
            dev.upload(&w).unwrap(),
            dev.upload(&dy).unwrap(),
        );
        let mut y = poisoned_bf16(&dev, rows * width);
        let mut rstd = poisoned_f32(&dev, rows);
        dev.rmsnorm_fwd(rows, width, eps, &xd, &wd, &mut y, &mut rstd)
            .unwrap();
        let (want_y, want_r) = reference::rmsnorm_fwd(&widen(&x), &widen(&w), f64::from(eps));
        assert_close("y", &bf16_out(&dev, &y), &want_y, BF16_TOL);
        assert_close("rstd", &f32_out(&dev, &rstd), &want_r, F32_TOL);

        let mut dx = poisoned_bf16(&dev, rows * width);
        let mut dw = poisoned_f32(&dev, width);
        dev.rmsnorm_bwd(rows, width, &xd, &wd, &dyd, &rstd, &mut dx, &mut dw)
            .unwrap();
        let (want_dx, want_dw) =
            reference::rmsnorm_bwd(&widen(&x), &widen(&w), &widen(&dy), f64::from(eps));
        assert_close("dx", &bf16_out(&dev, &dx), &want_dx, BF16_TOL);
        assert_close("dw", &f32_out(&dev, &dw), &want_dw, F32_TOL);
    }
}

#[test]
fn rope_forward_and_backward_match_reference() {
    let Some(dev) = gpu("rope") else { return };
    let mut rng = rng("rope");
    let scaling = Llama3Scaling {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192.0,
    };
    for (heads, head_dim) in [(4, 128), (3, 64)] {
        let tokens = 50;
        let inv_freq = rope_inv_freq(head_dim, 500_000.0, Some(scaling));
        let pos: Vec<i32> = (0..tokens).map(|_| rng.random_range(0..8000)).collect();
        let x = random_bf16(&mut rng, tokens * heads * head_dim, 1.0);
        let (pd, fd) = (dev.upload(&pos).unwrap(), dev.upload(&inv_freq).unwrap());
        let mut buf = dev.upload(&x).unwrap();
        dev.rope_fwd(tokens, heads, head_dim, &mut buf, &pd, &fd)
            .unwrap();
        let want = reference::rope(&widen(&x), heads, head_dim, &pos, &inv_freq, 1.0);
        assert_close("rope fwd", &bf16_out(&dev, &buf), &want, BF16_TOL);

        let mut grad = dev.upload(&x).unwrap();
        dev.rope_bwd(tokens, heads, head_dim, &mut grad, &pd, &fd)
            .unwrap();
        let want = reference::rope(&widen(&x), heads, head_dim, &pos, &inv_freq, -1.0);
        assert_close("rope bwd", &bf16_out(&dev, &grad), &want, BF16_TOL);
    }
}

#[test]
fn llama3_inverse_frequencies_keep_high_and_divide_low() {
    let scaling = Llama3Scaling {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192.0,
    };
    let plain = rope_inv_freq(128, 500_000.0, None);
    let scaled = rope_inv_freq(128, 500_000.0, Some(scaling));
    assert_eq!(plain[0], 1.0);
    assert_eq!(scaled[0], 1.0, "short wavelengths are kept");
    let last = plain.len() - 1;
    assert!((scaled[last] * 8.0 - plain[last]).abs() <= plain[last] * 1e-6);
    assert!(
        scaled.windows(2).all(|w| w[0] > w[1]),
        "frequencies stay decreasing"
    );
}

#[test]
fn swiglu_forward_and_backward_match_reference() {
    let Some(dev) = gpu("swiglu") else { return };
    let mut rng = rng("swiglu");
    for n in [14336 * 3, 10_007] {
        let gate = random_bf16(&mut rng, n, 4.0);
        let up = random_bf16(&mut rng, n, 2.0);
        let dout = random_bf16(&mut rng, n, 1.0);
        let (gd, ud, dd) = (
            dev.upload(&gate).unwrap(),
            dev.upload(&up).unwrap(),
            dev.upload(&dout).unwrap(),
        );
        let mut out = poisoned_bf16(&dev, n);
        dev.swiglu_fwd(&gd, &ud, &mut out).unwrap();
        assert_close(
            "swiglu",
            &bf16_out(&dev, &out),
            &reference::swiglu_fwd(&widen(&gate), &widen(&up)),
            BF16_TOL,
        );
        let mut dg = poisoned_bf16(&dev, n);
        let mut du = poisoned_bf16(&dev, n);
        dev.swiglu_bwd(&gd, &ud, &dd, &mut dg, &mut du).unwrap();
        let (wg, wu) = reference::swiglu_bwd(&widen(&gate), &widen(&up), &widen(&dout));
        assert_close("dgate", &bf16_out(&dev, &dg), &wg, BF16_TOL);
        assert_close("dup", &bf16_out(&dev, &du), &wu, BF16_TOL);
    }
}

#[test]
fn embedding_forward_and_backward_match_reference() {
    let Some(dev) = gpu("embedding") else { return };
    let mut rng = rng("embedding");
    let (vocab, width, tokens) = (500, 384, 200);
    let table = random_bf16(&mut rng, vocab * width, 1.0);
    // Few distinct ids, so the backward's atomics collide.
    let ids: Vec<i32> = (0..tokens).map(|_| rng.random_range(0..20)).collect();
    let idd = dev.upload(&ids).unwrap();
    let mut out = poisoned_bf16(&dev, tokens * width);
    dev.embedding_fwd(vocab, width, &idd, &dev.upload(&table).unwrap(), &mut out)
        .unwrap();
    let want: Vec<f64> = ids
        .iter()
        .flat_map(|&i| widen(&table[i as usize * width..][..width]))
        .collect();
    assert_eq!(bf16_out(&dev, &out), want, "a gather is exact");

    let dout = random_bf16(&mut rng, tokens * width, 1.0);
    let mut dtable = dev.zeros::<f32>(vocab * width).unwrap();
    dev.embedding_bwd(vocab, width, &idd, &dev.upload(&dout).unwrap(), &mut dtable)
        .unwrap();
    let mut want = vec![0.0; vocab * width];
    for (n, &i) in ids.iter().enumerate() {
        for h in 0..width {
            want[i as usize * width + h] += f64::from(dout[n * width + h].to_f32());
        }
    }
    assert_close("dtable", &f32_out(&dev, &dtable), &want, F32_TOL);
}
