// Causal flash attention with grouped-query heads, forward and backward.
//
// Layouts (row-major, bf16 unless noted):
//   q, o, dq, do   [B, T, Hq, D]      the projection output, no transpose
//   k, v, dk, dv   [B, T, Hkv, D]     Hq is a multiple of Hkv (GQA)
//   lse, delta     [B, Hq, T] f32     logsumexp of the scaled scores (natural
//                                     log) and rowsum(dO * O) for backward
// Sequence b is left-padded by kv_start[b] positions (int, [B]): query row i
// attends to keys kv_start[b]..=i, and a padding row (i < kv_start[b]) to
// none, so its output, its gradients and the gradients of padding keys are 0
// and its lse is -inf, as in the f32 kernel (tensor.cu). Scores are scaled by
// `scale` (1/sqrt(D)).
//
// Tiles of 32 queries x 32 keys, 4 warps of 8 rows each, f32 accumulation,
// exp2 with log2(e) folded into the scale. Backward is split into a dK/dV
// kernel (one block per key tile and kv head, looping over the group's query
// heads) and a dQ kernel (one block per query tile), so no output is written
// by two blocks: results are deterministic and need no atomics.

#define ATT_BM 32
#define ATT_BN 32
#define ATT_ROWS 8
#define ATT_THREADS 128

// The first key tile a query tile can see: the one holding kv_start.
__device__ __forceinline__ int first_key_tile(int start) { return start - start % ATT_BN; }

// Copy `rows` rows of D bf16 from a strided global tensor into a shared tile
// with row pitch P (elements), two elements per 32-bit access; rows at or past
// `valid` are zero so padded keys and queries stay finite.
template <int D, int P>
__device__ __forceinline__ void load_tile(bf16_t (*dst)[P], const bf16_t* src, size_t stride,
                                          int first, int valid) {
    constexpr int WORDS = D / 2;
    for (int i = threadIdx.x; i < ATT_BM * WORDS; i += ATT_THREADS) {
        int r = i / WORDS;
        int c = (i % WORDS) * 2;
        int row = first + r;
        u32 w = row < valid ? *(const u32*)(src + (size_t)row * stride + c) : 0u;
        *(u32*)&dst[r][c] = w;
    }
}

template <int D>
__device__ void flash_fwd(const bf16_t* __restrict__ q, const bf16_t* __restrict__ k,
                          const bf16_t* __restrict__ v, bf16_t* __restrict__ o,
                          float* __restrict__ lse, const int* __restrict__ kv_start, int T,
                          int Hq, int Hkv, float scale) {
    constexpr int C = D / 32;
    __shared__ __align__(16) bf16_t sQ[ATT_BM][D];
    __shared__ __align__(16) bf16_t sK[ATT_BN][D + 2];
    __shared__ __align__(16) bf16_t sV[ATT_BN][D];

    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int m0 = blockIdx.x * ATT_BM;
    const int h = blockIdx.y;
    const int b = blockIdx.z;
    const int hk = h / (Hq / Hkv);
    const size_t qs = (size_t)Hq * D;
    const size_t ks = (size_t)Hkv * D;
    const bf16_t* qb = q + (size_t)b * T * qs + (size_t)h * D;
    const bf16_t* kb = k + (size_t)b * T * ks + (size_t)hk * D;
    const bf16_t* vb = v + (size_t)b * T * ks + (size_t)hk * D;
    const float c2 = scale * PP_LOG2E;

    load_tile<D, D>(sQ, qb, qs, m0, T);

    float acc[ATT_ROWS][C];
    float m_i[ATT_ROWS];
    float l_i[ATT_ROWS];
#pragma unroll
    for (int r = 0; r < ATT_ROWS; ++r) {
        m_i[r] = -PP_INF;
        l_i[r] = 0.0f;
#pragma unroll
        for (int c = 0; c < C; ++c) acc[r][c] = 0.0f;
    }

    const int lo = kv_start[b];
    const int n_end = min(T, m0 + ATT_BM);
    for (int n0 = first_key_tile(lo); n0 < n_end; n0 += ATT_BN) {
        __syncthreads();
        load_tile<D, D + 2>(sK, kb, ks, n0, T);
        load_tile<D, D>(sV, vb, ks, n0, T);
        __syncthreads();

        float s[ATT_ROWS];
#pragma unroll
        for (int r = 0; r < ATT_ROWS; ++r) s[r] = 0.0f;
#pragma unroll 4
        for (int d = 0; d < D; d += 2) {
            u32 kw = *(const u32*)&sK[lane][d];
            float k0 = bf16_lo(kw), k1 = bf16_hi(kw);
#pragma unroll
            for (int r = 0; r < ATT_ROWS; ++r) {
                u32 qw = *(const u32*)&sQ[warp * ATT_ROWS + r][d];
                s[r] = fmaf(bf16_lo(qw), k0, fmaf(bf16_hi(qw), k1, s[r]));
            }
        }

        const int key = n0 + lane;
#pragma unroll
        for (int r = 0; r < ATT_ROWS; ++r) {
            const int row = m0 + warp * ATT_ROWS + r;
            float x = (key >= lo && key <= row && key < T) ? s[r] * c2 : -PP_INF;
            float mn = fmaxf(m_i[r], warp_max(x));
            // A row that has seen no key yet keeps m = -inf; shifting by 0
            // keeps its p at 0 instead of exp2(-inf - -inf) = NaN.
            float shift = mn == -PP_INF ? 0.0f : mn;
            float p = exp2f(x - shift);
            float alpha = exp2f(m_i[r] - shift);
            l_i[r] = l_i[r] * alpha + warp_sum(p);
            m_i[r] = mn;
            s[r] = p;
#pragma unroll
            for (int c = 0; c < C; ++c) acc[r][c] *= alpha;
        }

#pragma unroll 4
        for (int n = 0; n < ATT_BN; ++n) {
            float vv[C];
#pragma unroll
            for (int c = 0; c < C; ++c) vv[c] = bf16_to_f32(sV[n][lane + 32 * c]);
#pragma unroll
            for (int r = 0; r < ATT_ROWS; ++r) {
                float p = __shfl_sync(0xffffffffu, s[r], n);
#pragma unroll
                for (int c = 0; c < C; ++c) acc[r][c] = fmaf(p, vv[c], acc[r][c]);
            }
        }
    }

#pragma unroll
    for (int r = 0; r < ATT_ROWS; ++r) {
        const int row = m0 + warp * ATT_ROWS + r;
        if (row < T) {
            float inv = l_i[r] > 0.0f ? 1.0f / l_i[r] : 0.0f;
            bf16_t* orow = o + (size_t)b * T * qs + (size_t)row * qs + (size_t)h * D;
#pragma unroll
            for (int c = 0; c < C; ++c) orow[lane + 32 * c] = f32_to_bf16(acc[r][c] * inv);
            if (lane == 0) {
                lse[((size_t)b * Hq + h) * T + row] =
                    l_i[r] > 0.0f ? (m_i[r] + log2f(l_i[r])) * PP_LN2 : -PP_INF;
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(ATT_THREADS)
flash_attn_fwd_d64(const bf16_t* q, const bf16_t* k, const bf16_t* v, bf16_t* o, float* lse,
                   const int* kv_start, int T, int Hq, int Hkv, float scale) {
    flash_fwd<64>(q, k, v, o, lse, kv_start, T, Hq, Hkv, scale);
}

extern "C" __global__ void __launch_bounds__(ATT_THREADS)
flash_attn_fwd_d128(const bf16_t* q, const bf16_t* k, const bf16_t* v, bf16_t* o, float* lse,
                    const int* kv_start, int T, int Hq, int Hkv, float scale) {
    flash_fwd<128>(q, k, v, o, lse, kv_start, T, Hq, Hkv, scale);
}

// delta[b, h, t] = sum_d dO[b, t, h, d] * O[b, t, h, d]: one warp per row.
// rows = B * T * Hq, enumerated in the [B, T, Hq] order of O.
extern "C" __global__ void __launch_bounds__(ATT_THREADS)
flash_attn_bwd_delta(const bf16_t* __restrict__ o, const bf16_t* __restrict__ d_o,
                     float* __restrict__ delta, int B, int T, int Hq, int D) {
    const int lane = threadIdx.x & 31;
    const long long row = (long long)blockIdx.x * (ATT_THREADS / 32) + (threadIdx.x >> 5);
    if (row >= (long long)B * T * Hq) return;
    const bf16_t* orow = o + row * D;
    const bf16_t* grow = d_o + row * D;
    float sum = 0.0f;
    for (int d = lane; d < D; d += 32) sum = fmaf(bf16_to_f32(orow[d]), bf16_to_f32(grow[d]), sum);
    sum = warp_sum(sum);
    if (lane == 0) {
        const int h = (int)(row % Hq);
        const long long bt = row / Hq;
        const int t = (int)(bt % T);
        const long long b = bt / T;
        delta[(b * Hq + h) * T + t] = sum;
    }
}

template <int D>
__device__ void flash_bwd_dkdv(const bf16_t* __restrict__ q, const bf16_t* __restrict__ k,
                               const bf16_t* __restrict__ v, const bf16_t* __restrict__ d_o,
                               const float* __restrict__ lse, const float* __restrict__ delta,
                               bf16_t* __restrict__ dk, bf16_t* __restrict__ dv,
                               const int* __restrict__ kv_start, int T, int Hq, int Hkv,
                               float scale) {
    constexpr int C = D / 32;
    __shared__ __align__(16) bf16_t sK[ATT_BN][D];
    __shared__ __align__(16) bf16_t sV[ATT_BN][D];
    __shared__ __align__(16) bf16_t sQ[ATT_BM][D + 2];
    __shared__ __align__(16) bf16_t sO[ATT_BM][D + 2];
    __shared__ float sL[ATT_BM];
    __shared__ float sD[ATT_BM];

    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int n0 = blockIdx.x * ATT_BN;
    const int hk = blockIdx.y;
    const int b = blockIdx.z;
    const int group = Hq / Hkv;
    const size_t qs = (size_t)Hq * D;
    const size_t ks = (size_t)Hkv * D;
    const bf16_t* kb = k + (size_t)b * T * ks + (size_t)hk * D;
    const bf16_t* vb = v + (size_t)b * T * ks + (size_t)hk * D;
    const float c2 = scale * PP_LOG2E;

    load_tile<D, D>(sK, kb, ks, n0, T);
    load_tile<D, D>(sV, vb, ks, n0, T);

    float gk[ATT_ROWS][C];
    float gv[ATT_ROWS][C];
#pragma unroll
    for (int r = 0; r < ATT_ROWS; ++r)
#pragma unroll
        for (int c = 0; c < C; ++c) {
            gk[r][c] = 0.0f;
            gv[r][c] = 0.0f;
        }

    // A tile of padding keys only is seen by no query: its gradients stay 0.
    const int lo = kv_start[b];
    const int h_end = n0 + ATT_BN > lo ? (hk + 1) * group : hk * group;
    for (int h = hk * group; h < h_end; ++h) {
        const bf16_t* qb = q + (size_t)b * T * qs + (size_t)h * D;
        const bf16_t* gb = d_o + (size_t)b * T * qs + (size_t)h * D;
        const float* lb = lse + ((size_t)b * Hq + h) * T;
        const float* db = delta + ((size_t)b * Hq + h) * T;
        for (int m0 = n0; m0 < T; m0 += ATT_BM) {
            __syncthreads();
            load_tile<D, D + 2>(sQ, qb, qs, m0, T);
            load_tile<D, D + 2>(sO, gb, qs, m0, T);
            if (threadIdx.x < ATT_BM) {
                int row = m0 + threadIdx.x;
                sL[threadIdx.x] = row < T ? lb[row] * PP_LOG2E : 0.0f;
                sD[threadIdx.x] = row < T ? db[row] : 0.0f;
            }
            __syncthreads();

            float s[ATT_ROWS];
            float dp[ATT_ROWS];
#pragma unroll
            for (int r = 0; r < ATT_ROWS; ++r) {
                s[r] = 0.0f;
                dp[r] = 0.0f;
            }
#pragma unroll 4
            for (int d = 0; d < D; d += 2) {
                u32 qw = *(const u32*)&sQ[lane][d];
                u32 gw = *(const u32*)&sO[lane][d];
                float q0 = bf16_lo(qw), q1 = bf16_hi(qw), g0 = bf16_lo(gw), g1 = bf16_hi(gw);
#pragma unroll
                for (int r = 0; r < ATT_ROWS; ++r) {
                    u32 kw = *(const u32*)&sK[warp * ATT_ROWS + r][d];
                    u32 vw = *(const u32*)&sV[warp * ATT_ROWS + r][d];
                    s[r] = fmaf(bf16_lo(kw), q0, fmaf(bf16_hi(kw), q1, s[r]));
                    dp[r] = fmaf(bf16_lo(vw), g0, fmaf(bf16_hi(vw), g1, dp[r]));
                }
            }

            const int query = m0 + lane;
#pragma unroll
            for (int r = 0; r < ATT_ROWS; ++r) {
                const int key = n0 + warp * ATT_ROWS + r;
                bool valid = key >= lo && key <= query && query < T && key < T;
                float p = valid ? exp2f(s[r] * c2 - sL[lane]) : 0.0f;
                s[r] = p;
                dp[r] = p * (dp[r] - sD[lane]);
            }

#pragma unroll 4
            for (int m = 0; m < ATT_BM; ++m) {
                float qv[C];
                float gv2[C];
#pragma unroll
                for (int c = 0; c < C; ++c) {
                    qv[c] = bf16_to_f32(sQ[m][lane + 32 * c]);
                    gv2[c] = bf16_to_f32(sO[m][lane + 32 * c]);
                }
#pragma unroll
                for (int r = 0; r < ATT_ROWS; ++r) {
                    float p = __shfl_sync(0xffffffffu, s[r], m);
                    float ds = __shfl_sync(0xffffffffu, dp[r], m);
#pragma unroll
                    for (int c = 0; c < C; ++c) {
                        gv[r][c] = fmaf(p, gv2[c], gv[r][c]);
                        gk[r][c] = fmaf(ds, qv[c], gk[r][c]);
                    }
                }
            }
        }
    }

#pragma unroll
    for (int r = 0; r < ATT_ROWS; ++r) {
        const int key = n0 + warp * ATT_ROWS + r;
        if (key < T) {
            size_t off = (size_t)b * T * ks + (size_t)key * ks + (size_t)hk * D;
#pragma unroll
            for (int c = 0; c < C; ++c) {
                dk[off + lane + 32 * c] = f32_to_bf16(gk[r][c] * scale);
                dv[off + lane + 32 * c] = f32_to_bf16(gv[r][c]);
            }
        }
    }
}

template <int D>
__device__ void flash_bwd_dq(const bf16_t* __restrict__ q, const bf16_t* __restrict__ k,
                             const bf16_t* __restrict__ v, const bf16_t* __restrict__ d_o,
                             const float* __restrict__ lse, const float* __restrict__ delta,
                             bf16_t* __restrict__ dq, const int* __restrict__ kv_start, int T,
                             int Hq, int Hkv, float scale) {
    constexpr int C = D / 32;
    __shared__ __align__(16) bf16_t sQ[ATT_BM][D];
    __shared__ __align__(16) bf16_t sO[ATT_BM][D];
    __shared__ __align__(16) bf16_t sK[ATT_BN][D + 2];
    __shared__ __align__(16) bf16_t sV[ATT_BN][D + 2];

    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int m0 = blockIdx.x * ATT_BM;
    const int h = blockIdx.y;
    const int b = blockIdx.z;
    const int hk = h / (Hq / Hkv);
    const size_t qs = (size_t)Hq * D;
    const size_t ks = (size_t)Hkv * D;
    const bf16_t* qb = q + (size_t)b * T * qs + (size_t)h * D;
    const bf16_t* gb = d_o + (size_t)b * T * qs + (size_t)h * D;
    const bf16_t* kb = k + (size_t)b * T * ks + (size_t)hk * D;
    const bf16_t* vb = v + (size_t)b * T * ks + (size_t)hk * D;
    const float c2 = scale * PP_LOG2E;

    load_tile<D, D>(sQ, qb, qs, m0, T);
    load_tile<D, D>(sO, gb, qs, m0, T);

    float l2[ATT_ROWS];
    float dl[ATT_ROWS];
    float acc[ATT_ROWS][C];
#pragma unroll
    for (int r = 0; r < ATT_ROWS; ++r) {
        const int row = m0 + warp * ATT_ROWS + r;
        l2[r] = row < T ? lse[((size_t)b * Hq + h) * T + row] * PP_LOG2E : 0.0f;
        dl[r] = row < T ? delta[((size_t)b * Hq + h) * T + row] : 0.0f;
#pragma unroll
        for (int c = 0; c < C; ++c) acc[r][c] = 0.0f;
    }

    const int lo = kv_start[b];
    const int n_end = min(T, m0 + ATT_BM);
    for (int n0 = first_key_tile(lo); n0 < n_end; n0 += ATT_BN) {
        __syncthreads();
        load_tile<D, D + 2>(sK, kb, ks, n0, T);
        load_tile<D, D + 2>(sV, vb, ks, n0, T);
        __syncthreads();

        float s[ATT_ROWS];
        float dp[ATT_ROWS];
#pragma unroll
        for (int r = 0; r < ATT_ROWS; ++r) {
            s[r] = 0.0f;
            dp[r] = 0.0f;
        }
#pragma unroll 4
        for (int d = 0; d < D; d += 2) {
            u32 kw = *(const u32*)&sK[lane][d];
            u32 vw = *(const u32*)&sV[lane][d];
            float k0 = bf16_lo(kw), k1 = bf16_hi(kw), v0 = bf16_lo(vw), v1 = bf16_hi(vw);
#pragma unroll
            for (int r = 0; r < ATT_ROWS; ++r) {
                u32 qw = *(const u32*)&sQ[warp * ATT_ROWS + r][d];
                u32 gw = *(const u32*)&sO[warp * ATT_ROWS + r][d];
                s[r] = fmaf(bf16_lo(qw), k0, fmaf(bf16_hi(qw), k1, s[r]));
                dp[r] = fmaf(bf16_lo(gw), v0, fmaf(bf16_hi(gw), v1, dp[r]));
            }
        }

        const int key = n0 + lane;
#pragma unroll
        for (int r = 0; r < ATT_ROWS; ++r) {
            const int row = m0 + warp * ATT_ROWS + r;
            bool valid = key >= lo && key <= row && row < T && key < T;
            float p = valid ? exp2f(s[r] * c2 - l2[r]) : 0.0f;
            dp[r] = p * (dp[r] - dl[r]);
        }

#pragma unroll 4
        for (int n = 0; n < ATT_BN; ++n) {
            float kv[C];
#pragma unroll
            for (int c = 0; c < C; ++c) kv[c] = bf16_to_f32(sK[n][lane + 32 * c]);
#pragma unroll
            for (int r = 0; r < ATT_ROWS; ++r) {
                float ds = __shfl_sync(0xffffffffu, dp[r], n);
#pragma unroll
                for (int c = 0; c < C; ++c) acc[r][c] = fmaf(ds, kv[c], acc[r][c]);
            }
        }
    }

#pragma unroll
    for (int r = 0; r < ATT_ROWS; ++r) {
        const int row = m0 + warp * ATT_ROWS + r;
        if (row < T) {
            bf16_t* out = dq + (size_t)b * T * qs + (size_t)row * qs + (size_t)h * D;
#pragma unroll
            for (int c = 0; c < C; ++c) out[lane + 32 * c] = f32_to_bf16(acc[r][c] * scale);
        }
    }
}

extern "C" __global__ void __launch_bounds__(ATT_THREADS)
flash_attn_bwd_dkdv_d64(const bf16_t* q, const bf16_t* k, const bf16_t* v, const bf16_t* d_o,
                        const float* lse, const float* delta, bf16_t* dk, bf16_t* dv,
                        const int* kv_start, int T, int Hq, int Hkv, float scale) {
    flash_bwd_dkdv<64>(q, k, v, d_o, lse, delta, dk, dv, kv_start, T, Hq, Hkv, scale);
}

extern "C" __global__ void __launch_bounds__(ATT_THREADS)
flash_attn_bwd_dkdv_d128(const bf16_t* q, const bf16_t* k, const bf16_t* v, const bf16_t* d_o,
                         const float* lse, const float* delta, bf16_t* dk, bf16_t* dv,
                         const int* kv_start, int T, int Hq, int Hkv, float scale) {
    flash_bwd_dkdv<128>(q, k, v, d_o, lse, delta, dk, dv, kv_start, T, Hq, Hkv, scale);
}

extern "C" __global__ void __launch_bounds__(ATT_THREADS)
flash_attn_bwd_dq_d64(const bf16_t* q, const bf16_t* k, const bf16_t* v, const bf16_t* d_o,
                      const float* lse, const float* delta, bf16_t* dq, const int* kv_start,
                      int T, int Hq, int Hkv, float scale) {
    flash_bwd_dq<64>(q, k, v, d_o, lse, delta, dq, kv_start, T, Hq, Hkv, scale);
}

extern "C" __global__ void __launch_bounds__(ATT_THREADS)
flash_attn_bwd_dq_d128(const bf16_t* q, const bf16_t* k, const bf16_t* v, const bf16_t* d_o,
                       const float* lse, const float* delta, bf16_t* dq, const int* kv_start,
                       int T, int Hq, int Hkv, float scale) {
    flash_bwd_dq<128>(q, k, v, d_o, lse, delta, dq, kv_start, T, Hq, Hkv, scale);
}
