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

int main() {
    unsigned seed = getenv("POKER_PIPE_TEST_SEED") ? (unsigned)atoll(getenv("POKER_PIPE_TEST_SEED")) : (unsigned)time(nullptr);
    printf("POKER_PIPE_TEST_SEED=%u\n", seed);
    rng.seed(seed);
    int B = 2, T = 45, Hq = 4, Hkv = 2;
    for (int D : {64, 128}) {
        size_t ql = (size_t)B * T * Hq * D, kl = (size_t)B * T * Hkv * D, ll = (size_t)B * Hq * T;
        auto q = rbf(ql), k = rbf(kl), v = rbf(kl), g = rbf(ql);
        std::vector<unsigned short> o(ql, 0x7fc0), dq(ql, 0x7fc0), dk(kl, 0x7fc0), dv(kl, 0x7fc0);
        std::vector<float> lse(ll, NAN), delta(ll, NAN);
        float scale = 1.0f / sqrtf(D);
        dim3 grid{(unsigned)((T + 31) / 32), (unsigned)Hq, (unsigned)B};
        launch(grid, 128, [&] { if (D == 64) flash_attn_fwd_d64(q.data(), k.data(), v.data(), o.data(), lse.data(), T, Hq, Hkv, scale); else flash_attn_fwd_d128(q.data(), k.data(), v.data(), o.data(), lse.data(), T, Hq, Hkv, scale); });
        // reference
        auto Q = wide(q), K = wide(k), V = wide(v), G = wide(g);
        std::vector<double> O(ql, 0), L(ll), dQ(ql, 0), dK(kl, 0), dV(kl, 0);
        int grp = Hq / Hkv;
        auto qi = [&](int b, int t, int h) { return ((size_t)(b * T + t) * Hq + h) * D; };
        auto ki = [&](int b, int t, int h) { return ((size_t)(b * T + t) * Hkv + h) * D; };
        for (int b = 0; b < B; ++b) for (int h = 0; h < Hq; ++h) for (int i = 0; i < T; ++i) {
            int hk = h / grp; std::vector<double> s(i + 1), dp(i + 1); double mx = -INFINITY;
            for (int j = 0; j <= i; ++j) { double a = 0; for (int x = 0; x < D; ++x) a += Q[qi(b, i, h) + x] * K[ki(b, j, hk) + x]; s[j] = a * scale; mx = std::max(mx, s[j]); }
            double sum = 0; for (int j = 0; j <= i; ++j) sum += exp(s[j] - mx);
            L[((size_t)b * Hq + h) * T + i] = mx + log(sum);
            double dot = 0;
            for (int j = 0; j <= i; ++j) { double p = exp(s[j] - mx) / sum; s[j] = p; double a = 0; for (int x = 0; x < D; ++x) { O[qi(b, i, h) + x] += p * V[ki(b, j, hk) + x]; a += G[qi(b, i, h) + x] * V[ki(b, j, hk) + x]; } dp[j] = a; dot += p * a; }
            for (int j = 0; j <= i; ++j) { double ds = s[j] * (dp[j] - dot) * scale; for (int x = 0; x < D; ++x) { dV[ki(b, j, hk) + x] += s[j] * G[qi(b, i, h) + x]; dQ[qi(b, i, h) + x] += ds * K[ki(b, j, hk) + x]; dK[ki(b, j, hk) + x] += ds * Q[qi(b, i, h) + x]; } }
        }
        std::vector<double> lsed(lse.begin(), lse.end());
        printf("head dim %d\n", D);
        check("flash fwd o", relerr(wide(o), O), 1e-2);
        check("flash fwd lse", relerr(lsed, L), 1e-4);
        unsigned rows = B * T * Hq;
        launch({(rows + 3) / 4, 1, 1}, 128, [&] { flash_attn_bwd_delta(o.data(), g.data(), delta.data(), B, T, Hq, D); });
        launch({grid.x, (unsigned)Hkv, (unsigned)B}, 128, [&] { if (D == 64) flash_attn_bwd_dkdv_d64(q.data(), k.data(), v.data(), g.data(), lse.data(), delta.data(), dk.data(), dv.data(), T, Hq, Hkv, scale); else flash_attn_bwd_dkdv_d128(q.data(), k.data(), v.data(), g.data(), lse.data(), delta.data(), dk.data(), dv.data(), T, Hq, Hkv, scale); });
        launch(grid, 128, [&] { if (D == 64) flash_attn_bwd_dq_d64(q.data(), k.data(), v.data(), g.data(), lse.data(), delta.data(), dq.data(), T, Hq, Hkv, scale); else flash_attn_bwd_dq_d128(q.data(), k.data(), v.data(), g.data(), lse.data(), delta.data(), dq.data(), T, Hq, Hkv, scale); });
        check("flash bwd dq", relerr(wide(dq), dQ), 1e-2);
        check("flash bwd dk", relerr(wide(dk), dK), 1e-2);
        check("flash bwd dv", relerr(wide(dv), dV), 1e-2);

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
        launch({(unsigned)R, 1, 1}, 512, [&] { cross_entropy_bwd(lg.data(), tg.data(), w.data(), lse.data(), 0.5f, V); });
        check("cross-entropy dlogits", relerr(wide(lg), Gw), 1e-2);
    }
    printf(failures ? "FAILED: %d checks\n" : "all checks passed\n", failures);
    return failures ? 1 : 0;
}
