// Runs the kernel sources on the CPU under emu.h (one std::thread per CUDA
// thread, barriers for __syncthreads and the warp shuffles) and compares them
// with f64 references: a check of the kernels' indexing, masking and
// reductions on a machine without a GPU. It is no substitute for the GPU
// tests (no memory model, no timing); see kernels/emu/run.sh.
#include "emu.h"
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <random>
#include "../cuda/common.cuh"
#include "../cuda/attention.cu"
#include "../cuda/decode.cu"
#include "../cuda/sampling.cu"
#include "../cuda/cross_entropy.cu"
#include "../cuda/rmsnorm.cu"
#include "../cuda/rope.cu"
#include "../cuda/swiglu.cu"
#include "../cuda/adamw.cu"
#include "../cuda/embedding.cu"
#include "../cuda/grad_norm.cu"

static std::mt19937 rng;
static int failures = 0;
// bf16 outputs within 1e-2, f32 outputs within 1e-4 (norm-wise relative).
static void check(const char* what, double err, double tol) {
    bool ok = err < tol;
    printf("%-28s rel err %.3e (bound %.0e) %s\n", what, err, tol, ok ? "ok" : "FAIL");
    failures += !ok;
}
static unsigned short tobf(float f) { unsigned u; memcpy(&u, &f, 4); u += 0x7fff + ((u >> 16) & 1); return u >> 16; }
static double frombf(unsigned short h) { unsigned u = (unsigned)h << 16; float f; memcpy(&f, &u, 4); return f; }
static std::vector<unsigned short> rbf(size_t n) { std::uniform_real_distribution<float> d(-1, 1); std::vector<unsigned short> v(n); for (auto& x : v) x = tobf(d(rng)); return v; }
static double relerr(const std::vector<double>& g, const std::vector<double>& w) { double a = 0, b = 0; for (size_t i = 0; i < g.size(); ++i) { if (!std::isfinite(g[i])) return INFINITY; a += (g[i] - w[i]) * (g[i] - w[i]); b += w[i] * w[i]; } return sqrt(a / b); }
static std::vector<double> wide(const std::vector<unsigned short>& v) { std::vector<double> r(v.size()); for (size_t i = 0; i < v.size(); ++i) r[i] = frombf(v[i]); return r; }


typedef std::vector<double> Vd;
static std::vector<float> rf(size_t n, float scale) {
    std::uniform_real_distribution<float> d(-scale, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}
static Vd widef(const std::vector<float>& v) { return Vd(v.begin(), v.end()); }

static void check_rmsnorm() {
    int N = 5, H = 1030;
    auto x = rbf(N * H), w = rbf(H), dy = rbf(N * H);
    std::vector<unsigned short> y(N * H, 0x7fc0), dx(N * H, 0x7fc0);
    std::vector<float> rstd(N, NAN), part(2 * H, NAN), dw(H, NAN);
    launch({(unsigned)N, 1, 1}, 256, [&] { rmsnorm_fwd(x.data(), w.data(), y.data(), rstd.data(), H, 1e-5f); });
    launch({2, 1, 1}, 256, [&] { rmsnorm_bwd(x.data(), w.data(), dy.data(), rstd.data(), dx.data(), part.data(), N, H, 3); });
    launch({(unsigned)(H + 255) / 256, 1, 1}, 256, [&] { sum_rows_f32(part.data(), dw.data(), 2, H); });
    Vd X = wide(x), W = wide(w), G = wide(dy), Y(N * H), R(N), DX(N * H), DW(H, 0);
    for (int r = 0; r < N; ++r) {
        double ss = 0;
        for (int i = 0; i < H; ++i) ss += X[r * H + i] * X[r * H + i];
        R[r] = 1 / sqrt(ss / H + 1e-5);
        double mean = 0;
        for (int i = 0; i < H; ++i) mean += G[r * H + i] * W[i] * X[r * H + i] * R[r] / H;
        for (int i = 0; i < H; ++i) {
            Y[r * H + i] = W[i] * X[r * H + i] * R[r];
            DX[r * H + i] = R[r] * (G[r * H + i] * W[i] - X[r * H + i] * R[r] * mean);
            DW[i] += G[r * H + i] * X[r * H + i] * R[r];
        }
    }
    check("rmsnorm y", relerr(wide(y), Y), 1e-2);
    check("rmsnorm rstd", relerr(widef(rstd), R), 1e-4);
    check("rmsnorm dx", relerr(wide(dx), DX), 1e-2);
    check("rmsnorm dw", relerr(widef(dw), DW), 1e-4);
}

static void check_rope() {
    int T = 6, H = 3, D = 64;
    auto x = rbf(T * H * D);
    std::vector<int> pos = {0, 1, 7, 100, 4000, 8191};
    std::vector<float> f(D / 2);
    for (int i = 0; i < D / 2; ++i) f[i] = (float)(1.0 / pow(500000.0, 2.0 * i / D));
    for (float sign : {1.0f, -1.0f}) {
        auto y = x;
        launch({4, 1, 1}, 64, [&] {
            if (sign > 0) rope_fwd(y.data(), y.data(), pos.data(), f.data(), T, H, D);
            else rope_bwd(y.data(), y.data(), pos.data(), f.data(), T, H, D);
        });
        Vd X = wide(x), Y(X.size());
        for (int t = 0; t < T; ++t)
            for (int h = 0; h < H; ++h)
                for (int i = 0; i < D / 2; ++i) {
                    double a = (double)((float)pos[t] * f[i]), s = sin(a) * sign, c = cos(a);
                    size_t b = (size_t)(t * H + h) * D;
                    Y[b + i] = X[b + i] * c - X[b + i + D / 2] * s;
                    Y[b + i + D / 2] = X[b + i + D / 2] * c + X[b + i] * s;
                }
        check(sign > 0 ? "rope fwd" : "rope bwd", relerr(wide(y), Y), 1e-2);
    }
}

static void check_swiglu() {
    long long n = 8 * 37 + 5;  // vector body and scalar tail (aligned vectors)
    auto g = rbf(n), u = rbf(n), d = rbf(n);
    std::vector<unsigned short> o(n, 0x7fc0), dg(n, 0x7fc0), du(n, 0x7fc0);
    launch({2, 1, 1}, 32, [&] { swiglu_fwd(g.data(), u.data(), o.data(), n); });
    launch({2, 1, 1}, 32, [&] { swiglu_bwd(g.data(), u.data(), d.data(), dg.data(), du.data(), n); });
    Vd G = wide(g), U = wide(u), Dd = wide(d), O(n), DG(n), DU(n);
    for (long long i = 0; i < n; ++i) {
        double s = 1 / (1 + exp(-G[i]));
        O[i] = G[i] * s * U[i];
        DU[i] = Dd[i] * G[i] * s;
        DG[i] = Dd[i] * U[i] * s * (1 + G[i] * (1 - s));
    }
    check("swiglu out", relerr(wide(o), O), 1e-2);
    check("swiglu dgate", relerr(wide(dg), DG), 1e-2);
    check("swiglu dup", relerr(wide(du), DU), 1e-2);
}

static void check_adamw() {
    long long n = 4 * 50 + 3;
    auto p = rf(n, 1), g = rf(n, 1);
    std::vector<float> m(n, 0), v(n, 0), scale = {0.5f};
    std::vector<unsigned short> pb(n, 0x7fc0);
    float lr = 0.01f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f;
    Vd P = widef(p), M(n, 0), V(n, 0);
    for (int step = 1; step <= 2; ++step) {
        float bc1 = 1 - powf(b1, step), bc2 = 1 - powf(b2, step);
        launch({1, 1, 1}, 64, [&] { adamw_f32grad(p.data(), m.data(), v.data(), pb.data(), g.data(), scale.data(), n, lr, b1, b2, eps, wd, bc1, bc2); });
        for (long long i = 0; i < n; ++i) {
            double gi = g[i] * 0.5, pi = P[i] * (1 - (double)lr * wd);
            M[i] = b1 * M[i] + (1 - (double)b1) * gi;
            V[i] = b2 * V[i] + (1 - (double)b2) * gi * gi;
            P[i] = pi - lr / (double)bc1 * M[i] / (sqrt(V[i]) / sqrt((double)bc2) + eps);
        }
    }
    check("adamw master", relerr(widef(p), P), 1e-4);
    check("adamw m", relerr(widef(m), M), 1e-4);
    check("adamw v", relerr(widef(v), V), 1e-4);
    check("adamw bf16 param", relerr(wide(pb), P), 1e-2);
}

static void check_embedding_and_norm() {
    int V = 10, H = 70, N = 9;
    auto table = rbf(V * H), dout = rbf(N * H);
    std::vector<int> ids = {3, 3, 0, 9, 3, 5, 0, 1, 2};
    std::vector<unsigned short> out(N * H, 0x7fc0);
    std::vector<float> dt(V * H, 0);
    launch({(unsigned)N, 1, 1}, 32, [&] { embedding_fwd(ids.data(), table.data(), out.data(), V, H); });
    launch({(unsigned)N, 1, 1}, 32, [&] { embedding_bwd(ids.data(), dout.data(), dt.data(), V, H); });
    Vd O(N * H), DT(V * H, 0);
    for (int n = 0; n < N; ++n)
        for (int h = 0; h < H; ++h) {
            O[n * H + h] = frombf(table[ids[n] * H + h]);
            DT[ids[n] * H + h] += frombf(dout[n * H + h]);
        }
    check("embedding out", relerr(wide(out), O), 1e-6);
    check("embedding dtable", relerr(widef(dt), DT), 1e-4);

    auto a = rf(1000, 1);
    auto b = rbf(301);
    std::vector<float> part(5, NAN), res(2, NAN);
    launch({3, 1, 1}, 256, [&] { sumsq_f32(a.data(), 1000, part.data(), 0); });
    launch({2, 1, 1}, 256, [&] { sumsq_bf16(b.data(), 301, part.data(), 3); });
    launch({1, 1, 1}, 256, [&] { grad_norm_finish(part.data(), 5, 1.0f, res.data()); });
    double ss = 0;
    for (float x : a) ss += (double)x * x;
    for (auto x : b) ss += frombf(x) * frombf(x);
    double norm = sqrt(ss);
    check("grad norm and clip", relerr(widef(res), Vd{norm, std::min(1.0, 1.0 / (norm + 1e-6))}), 1e-4);
}

// starts: each sequence's left padding (kv_start); 40 of 45 makes a whole
// query tile and a whole key tile of padding.
static void check_attention(int D, std::vector<int> starts) {
    int B = 2, T = 45, Hq = 4, Hkv = 2;
        size_t ql = (size_t)B * T * Hq * D, kl = (size_t)B * T * Hkv * D, ll = (size_t)B * Hq * T;
        auto q = rbf(ql), k = rbf(kl), v = rbf(kl), g = rbf(ql);
        std::vector<unsigned short> o(ql, 0x7fc0), dq(ql, 0x7fc0), dk(kl, 0x7fc0), dv(kl, 0x7fc0);
        std::vector<float> lse(ll, NAN), delta(ll, NAN);
        float scale = 1.0f / sqrtf(D);
        dim3 grid{(unsigned)((T + 31) / 32), (unsigned)Hq, (unsigned)B};
        launch(grid, 128, [&] { if (D == 64) flash_attn_fwd_d64(q.data(), k.data(), v.data(), o.data(), lse.data(), starts.data(), T, Hq, Hkv, scale); else flash_attn_fwd_d128(q.data(), k.data(), v.data(), o.data(), lse.data(), starts.data(), T, Hq, Hkv, scale); });
        // reference
        auto Q = wide(q), K = wide(k), V = wide(v), G = wide(g);
        std::vector<double> O(ql, 0), L(ll, -INFINITY), dQ(ql, 0), dK(kl, 0), dV(kl, 0);
        int grp = Hq / Hkv;
        auto qi = [&](int b, int t, int h) { return ((size_t)(b * T + t) * Hq + h) * D; };
        auto ki = [&](int b, int t, int h) { return ((size_t)(b * T + t) * Hkv + h) * D; };
        // Row i of sequence b sees keys lo..=i; a padding row (i < lo) none.
        for (int b = 0; b < B; ++b) for (int h = 0; h < Hq; ++h) for (int i = starts[b]; i < T; ++i) {
            int hk = h / grp, lo = starts[b]; std::vector<double> s(i + 1), dp(i + 1); double mx = -INFINITY;
            for (int j = lo; j <= i; ++j) { double a = 0; for (int x = 0; x < D; ++x) a += Q[qi(b, i, h) + x] * K[ki(b, j, hk) + x]; s[j] = a * scale; mx = std::max(mx, s[j]); }
            double sum = 0; for (int j = lo; j <= i; ++j) sum += exp(s[j] - mx);
            L[((size_t)b * Hq + h) * T + i] = mx + log(sum);
            double dot = 0;
            for (int j = lo; j <= i; ++j) { double p = exp(s[j] - mx) / sum; s[j] = p; double a = 0; for (int x = 0; x < D; ++x) { O[qi(b, i, h) + x] += p * V[ki(b, j, hk) + x]; a += G[qi(b, i, h) + x] * V[ki(b, j, hk) + x]; } dp[j] = a; dot += p * a; }
            for (int j = lo; j <= i; ++j) { double ds = s[j] * (dp[j] - dot) * scale; for (int x = 0; x < D; ++x) { dV[ki(b, j, hk) + x] += s[j] * G[qi(b, i, h) + x]; dQ[qi(b, i, h) + x] += ds * K[ki(b, j, hk) + x]; dK[ki(b, j, hk) + x] += ds * Q[qi(b, i, h) + x]; } }
        }
        // Padding rows' lse must be -inf exactly; the rest is compared.
        std::vector<double> lsed, L_seen;
        int lse_wrong = 0;
        for (size_t r = 0; r < ll; ++r) {
            if (std::isinf(L[r])) lse_wrong += !(std::isinf(lse[r]) && lse[r] < 0);
            else { lsed.push_back(lse[r]); L_seen.push_back(L[r]); }
        }
        printf("head dim %d, kv_start {%d, %d}\n", D, starts[0], starts[1]);
        check("flash fwd o", relerr(wide(o), O), 1e-2);
        check("flash fwd lse", relerr(lsed, L_seen), 1e-4);
        check("flash fwd padding lse -inf", lse_wrong, 0.5);
        unsigned rows = B * T * Hq;
        launch({(rows + 3) / 4, 1, 1}, 128, [&] { flash_attn_bwd_delta(o.data(), g.data(), delta.data(), B, T, Hq, D); });
        launch({grid.x, (unsigned)Hkv, (unsigned)B}, 128, [&] { if (D == 64) flash_attn_bwd_dkdv_d64(q.data(), k.data(), v.data(), g.data(), lse.data(), delta.data(), dk.data(), dv.data(), starts.data(), T, Hq, Hkv, scale); else flash_attn_bwd_dkdv_d128(q.data(), k.data(), v.data(), g.data(), lse.data(), delta.data(), dk.data(), dv.data(), starts.data(), T, Hq, Hkv, scale); });
        launch(grid, 128, [&] { if (D == 64) flash_attn_bwd_dq_d64(q.data(), k.data(), v.data(), g.data(), lse.data(), delta.data(), dq.data(), starts.data(), T, Hq, Hkv, scale); else flash_attn_bwd_dq_d128(q.data(), k.data(), v.data(), g.data(), lse.data(), delta.data(), dq.data(), starts.data(), T, Hq, Hkv, scale); });
        check("flash bwd dq", relerr(wide(dq), dQ), 1e-2);
        check("flash bwd dk", relerr(wide(dk), dK), 1e-2);
        check("flash bwd dv", relerr(wide(dv), dV), 1e-2);
        if (starts[0] != 0 || starts[1] != 0) return;

        // decode: query = last row of each sequence of length lens[b]
        int S = T; std::vector<int> lens = {1, T};
        std::vector<unsigned short> qd((size_t)B * Hq * D), out((size_t)B * Hq * D, 0x7fc0);
        std::vector<double> want((size_t)B * Hq * D, 0);
        for (int b = 0; b < B; ++b) for (int h = 0; h < Hq; ++h) {
            for (int x = 0; x < D; ++x) qd[((size_t)b * Hq + h) * D + x] = q[qi(b, lens[b] - 1, h) + x];
            for (int x = 0; x < D; ++x) want[((size_t)b * Hq + h) * D + x] = O[qi(b, lens[b] - 1, h) + x];
        }
        int split_len = 7, splits = (T + split_len - 1) / split_len;
        std::vector<float> po((size_t)B * Hq * splits * D, NAN), pml((size_t)B * Hq * splits * 2, NAN);
        launch({(unsigned)splits, (unsigned)Hkv, (unsigned)B}, 128, [&] { if (D == 64) decode_attn_partial_d64(qd.data(), k.data(), v.data(), lens.data(), po.data(), pml.data(), S, Hq, Hkv, split_len, scale); else decode_attn_partial_d128(qd.data(), k.data(), v.data(), lens.data(), po.data(), pml.data(), S, Hq, Hkv, split_len, scale); });
        launch({(unsigned)Hq, (unsigned)B, 1}, D, [&] { decode_attn_combine(po.data(), pml.data(), out.data(), Hq, splits); });
        check("decode out", relerr(wide(out), want), 1e-2);
}

static void check_sampling() {
    // sampling greedy + top-k=1 must agree with argmax; top-p tiny as well
    {
        int V = 3000, R = 2; std::vector<float> lg(R * V); std::normal_distribution<float> nd(0, 3); for (auto& x : lg) x = nd(rng);
        std::vector<int> out(R, -1);
        for (auto [t, k, p] : std::vector<std::tuple<float, int, float>>{{0.0f, 0, 1.0f}, {1.0f, 1, 1.0f}, {1.0f, 0, 1e-6f}, {0.8f, 20, 0.9f}}) {
            launch({(unsigned)R, 1, 1}, 1024, [&] { sample_tokens(lg.data(), out.data(), V, t, k, p, 7, 100); });
            for (int r = 0; r < R; ++r) { int am = std::max_element(lg.begin() + r * V, lg.begin() + (r + 1) * V) - (lg.begin() + r * V);
                // rank of the chosen token
                int rank = 0; for (int v = 0; v < V; ++v) rank += lg[r * V + v] > lg[r * V + out[r]];
                // Greedy, top-k 1 and a tiny nucleus are all the argmax; top-k
                // 20 stays inside the 20 largest.
                bool ok = (t == 0.0f || k == 1 || p < 1e-3f) ? out[r] == am : rank < k;
                printf("sample t=%.1f k=%d p=%g row %d: token %d rank %d %s\n", t, k, p, r, out[r], rank, ok ? "ok" : "FAIL");
                failures += !ok; }
        }
    }
}

static void check_cross_entropy() {
    // cross-entropy + rmsnorm quick
    {
        int R = 3, V = 1001; auto lg = rbf(R * V); std::vector<int> tg = {5, -100, 1000}; std::vector<float> w = {1, 1, 0.5}, lse(R, NAN), loss(R, NAN);
        launch({(unsigned)R, 1, 1}, 512, [&] { cross_entropy_fwd(lg.data(), tg.data(), w.data(), lse.data(), loss.data(), V); });
        std::vector<double> L(R), Lo(R), gl, Gw(R * V, 0);
        for (int r = 0; r < R; ++r) { double mx = -INFINITY, s = 0; for (int v = 0; v < V; ++v) mx = std::max(mx, frombf(lg[r * V + v])); for (int v = 0; v < V; ++v) s += exp(frombf(lg[r * V + v]) - mx); L[r] = mx + log(s); Lo[r] = (tg[r] >= 0) ? w[r] * (L[r] - frombf(lg[r * V + tg[r]])) : 0;
            for (int v = 0; v < V; ++v) Gw[r * V + v] = tg[r] >= 0 ? w[r] * 0.5 * (exp(frombf(lg[r * V + v]) - L[r]) - (v == tg[r])) : 0; }
        std::vector<double> a(lse.begin(), lse.end()), b(loss.begin(), loss.end());
        check("cross-entropy lse", relerr(a, L), 1e-4);
        check("cross-entropy loss", relerr(b, Lo), 1e-4);
        std::vector<float> ent(R, NAN);
        launch({(unsigned)R, 1, 1}, 512, [&] { softmax_entropy(lg.data(), lse.data(), ent.data(), V); });
        std::vector<double> H(R, 0);
        for (int r = 0; r < R; ++r)
            for (int v = 0; v < V; ++v) { double lp = frombf(lg[r * V + v]) - L[r]; H[r] -= exp(lp) * lp; }
        check("softmax entropy", relerr(widef(ent), H), 1e-4);
        launch({(unsigned)R, 1, 1}, 512, [&] { cross_entropy_bwd(lg.data(), tg.data(), w.data(), lse.data(), 0.5f, V); });
        check("cross-entropy dlogits", relerr(wide(lg), Gw), 1e-2);
    }
}

int main() {
    unsigned seed = getenv("POKER_PIPE_TEST_SEED") ? (unsigned)atoll(getenv("POKER_PIPE_TEST_SEED")) : (unsigned)time(nullptr);
    printf("POKER_PIPE_TEST_SEED=%u\n", seed);
    rng.seed(seed);
    for (int D : {64, 128}) {
        check_attention(D, {0, 0});
        check_attention(D, {3, 40});
    }
    check_sampling();
    check_cross_entropy();
    check_rmsnorm();
    check_rope();
    check_swiglu();
    check_adamw();
    check_embedding_and_norm();
    printf(failures ? "FAILED: %d checks\n" : "all checks passed\n", failures);
    return failures ? 1 : 0;
}
