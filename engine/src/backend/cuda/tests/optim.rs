//! AdamW, gradient norm, cross-entropy and GEMM against f64.

use super::reference;
use super::*;
use crate::backend::AdamWStep;
use crate::backend::cuda::{GradRef, Transpose};

#[test]
fn adamw_steps_match_reference() {
    let Some(dev) = gpu("adamw") else { return };
    let mut rng = rng("adamw");
    // 4099: the vector body plus a scalar tail.
    let n = 4099;
    let mut hyper = AdamWStep {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        step: 1,
    };
    let master0 = random_f32(&mut rng, n, 1.0);
    let (mut p, mut m, mut v) = (widen32(&master0), vec![0.0; n], vec![0.0; n]);
    let mut master = dev.upload(&master0).unwrap();
    let mut md = dev.zeros::<f32>(n).unwrap();
    let mut vd = dev.zeros::<f32>(n).unwrap();
    let mut param = poisoned_bf16(&dev, n);
    let scale = 0.5f32;
    let scale_d = dev.upload(&[scale]).unwrap();
    for step in 1..=3 {
        hyper.step = step;
        // Alternate the gradient type: f32 for LoRA/master grads, bf16 too.
        let g = random_f32(&mut rng, n, 1.0);
        let g64 = if step % 2 == 1 {
            dev.adamw_step(
                hyper,
                &mut master,
                &mut md,
                &mut vd,
                &mut param,
                &dev.upload(&g).unwrap(),
                &scale_d,
            )
            .unwrap();
            widen32(&g)
        } else {
            let gb: Vec<bf16> = g.iter().map(|&x| bf16::from_f32(x)).collect();
            dev.adamw_step(
                hyper,
                &mut master,
                &mut md,
                &mut vd,
                &mut param,
                &dev.upload(&gb).unwrap(),
                &scale_d,
            )
            .unwrap();
            widen(&gb)
        };
        (p, m, v) = reference::adamw(&p, &m, &v, &g64, f64::from(scale), hyper);
        eprintln!("step {step}");
        assert_close("master", &f32_out(&dev, &master), &p, F32_TOL);
        assert_close("m", &f32_out(&dev, &md), &m, F32_TOL);
        assert_close("v", &f32_out(&dev, &vd), &v, F32_TOL);
        assert_close("bf16 param", &bf16_out(&dev, &param), &p, BF16_TOL);
    }
}

#[test]
fn grad_norm_and_clip_factor_match_reference() {
    let Some(dev) = gpu("grad_norm") else { return };
    let mut rng = rng("grad_norm");
    let a = random_f32(&mut rng, 1_000_003, 1.0);
    let b = random_f32(&mut rng, 17, 3.0);
    let c = random_bf16(&mut rng, 300_000, 0.5);
    let (ad, bd, cd) = (
        dev.upload(&a).unwrap(),
        dev.upload(&b).unwrap(),
        dev.upload(&c).unwrap(),
    );
    let sumsq: f64 = widen32(&a)
        .iter()
        .chain(&widen32(&b))
        .chain(&widen(&c))
        .map(|x| x * x)
        .sum();
    let norm = sumsq.sqrt();
    for max_norm in [1.0f32, 0.0, 1e6] {
        let mut out = poisoned_f32(&dev, 2);
        dev.grad_norm(
            &[GradRef::F32(&ad), GradRef::F32(&bd), GradRef::Bf16(&cd)],
            max_norm,
            &mut out,
        )
        .unwrap();
        let clip = if max_norm > 0.0 {
            (f64::from(max_norm) / (norm + 1e-6)).min(1.0)
        } else {
            1.0
        };
        assert_close(
            "norm and clip",
            &f32_out(&dev, &out),
            &[norm, clip],
            F32_TOL,
        );
    }
}

#[test]
fn cross_entropy_matches_reference() {
    let Some(dev) = gpu("cross_entropy") else {
        return;
    };
    let mut rng = rng("cross_entropy");
    let (rows, vocab) = (24, 32_003);
    let logits = random_bf16(&mut rng, rows * vocab, 8.0);
    let mut targets: Vec<i32> = (0..rows)
        .map(|_| rng.random_range(0..vocab as i32))
        .collect();
    let mut weights = vec![1.0f32; rows];
    weights[3] = 0.0;
    targets[5] = -100;
    weights[7] = 0.25;
    let scale = 1.0 / 21.25;
    let (td, wd) = (dev.upload(&targets).unwrap(), dev.upload(&weights).unwrap());
    let mut buf = dev.upload(&logits).unwrap();
    let mut lse = poisoned_f32(&dev, rows);
    let mut loss = poisoned_f32(&dev, rows);
    dev.cross_entropy_fwd(rows, vocab, &buf, &td, &wd, &mut lse, &mut loss)
        .unwrap();
    let (wl, wloss, wgrad) =
        reference::cross_entropy(&widen(&logits), vocab, &targets, &weights, scale);
    assert_close("lse", &f32_out(&dev, &lse), &wl, F32_TOL);
    assert_close("loss", &f32_out(&dev, &loss), &wloss, F32_TOL);
    dev.cross_entropy_bwd(rows, vocab, &mut buf, &td, &wd, &lse, scale as f32)
        .unwrap();
    assert_close("dlogits", &bf16_out(&dev, &buf), &wgrad, BF16_TOL);
}

#[test]
fn gemm_forms_match_reference() {
    let Some(dev) = gpu("gemm") else { return };
    let mut rng = rng("gemm");
    let (m, n, k) = (67, 96, 130);
    for (ta, tb) in [(false, true), (false, false), (true, false)] {
        let a = random_bf16(&mut rng, m * k, 1.0);
        let b = random_bf16(&mut rng, k * n, 1.0);
        let (ad, bd) = (dev.upload(&a).unwrap(), dev.upload(&b).unwrap());
        let t = |x: bool| if x { Transpose::Yes } else { Transpose::No };
        let want = reference::gemm(m, n, k, &widen(&a), ta, &widen(&b), tb);
        eprintln!("trans a {ta} trans b {tb}");
        let mut c16 = poisoned_bf16(&dev, m * n);
        dev.gemm((m, n, k), &ad, t(ta), &bd, t(tb), &mut c16, 1.0, 0.0)
            .unwrap();
        assert_close("bf16 out", &bf16_out(&dev, &c16), &want, BF16_TOL);
        let mut c32 = poisoned_f32(&dev, m * n);
        dev.gemm((m, n, k), &ad, t(ta), &bd, t(tb), &mut c32, 1.0, 0.0)
            .unwrap();
        assert_close("f32 out", &f32_out(&dev, &c32), &want, F32_TOL);
    }
}
