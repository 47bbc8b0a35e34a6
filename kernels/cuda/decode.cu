// Decode attention: one new query token per sequence against its KV cache,
// split over the cache length (flash-decoding) so a batch of one still fills
// the GPU, then a combine pass.
//
// Layouts:
//   q, out          [B, Hq, D] bf16
//   k_cache, v_cache[B, S, Hkv, D] bf16   S = cache capacity
//   lengths         [B] i32               valid positions per sequence (>= 1)
//   part_o          [B, Hq, splits, D] f32  unnormalised partial outputs
//   part_ml         [B, Hq, splits, 2] f32  (max, sum of exp) in log2 units
// Block (split, kv head, b) covers keys [split * split_len, +split_len) for
// all `group` = Hq / Hkv query heads sharing the kv head, so each cache row is
// read once. group <= DEC_MAX_GROUP.

#define DEC_THREADS 128
#define DEC_WARPS 4
#define DEC_MAX_GROUP 8

template <int D>
__device__ __forceinline__ void load_row(const bf16_t* p, float (&x)[D / 32]) {
    constexpr int C = D / 32;
    if constexpr (C == 2) {
        u32 w = *(const u32*)p;
        x[0] = bf16_lo(w);
        x[1] = bf16_hi(w);
    } else {
        uint2 w = *(const uint2*)p;
        x[0] = bf16_lo(w.x);
        x[1] = bf16_hi(w.x);
        x[2] = bf16_lo(w.y);
        x[3] = bf16_hi(w.y);
    }
}

template <int D>
__device__ void decode_partial(const bf16_t* __restrict__ q, const bf16_t* __restrict__ k_cache,
                               const bf16_t* __restrict__ v_cache, const int* __restrict__ lengths,
                               float* __restrict__ part_o, float* __restrict__ part_ml, int S,
                               int Hq, int Hkv, int split_len, float scale) {
    constexpr int C = D / 32;
    __shared__ float sM[DEC_WARPS][DEC_MAX_GROUP];
    __shared__ float sL[DEC_WARPS][DEC_MAX_GROUP];
    __shared__ float sA[DEC_WARPS][DEC_MAX_GROUP][D];

    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int split = blockIdx.x;
    const int splits = gridDim.x;
    const int hk = blockIdx.y;
    const int b = blockIdx.z;
    const int group = Hq / Hkv;
    const int len = min(lengths[b], S);
    const int start = split * split_len;
    const int end = min(len, start + split_len);
    const float c2 = scale * PP_LOG2E;

    // Each lane owns C consecutive dims, so a row is one coalesced read.
    float qv[DEC_MAX_GROUP][C];
    float m[DEC_MAX_GROUP];
    float l[DEC_MAX_GROUP];
    float acc[DEC_MAX_GROUP][C];
#pragma unroll
    for (int g = 0; g < DEC_MAX_GROUP; ++g) {
        m[g] = -PP_INF;
        l[g] = 0.0f;
#pragma unroll
        for (int c = 0; c < C; ++c) {
            acc[g][c] = 0.0f;
            qv[g][c] = 0.0f;
        }
        if (g < group) {
            load_row<D>(q + ((size_t)b * Hq + hk * group + g) * D + lane * C, qv[g]);
#pragma unroll
            for (int c = 0; c < C; ++c) qv[g][c] *= c2;
        }
    }

    const size_t row_stride = (size_t)Hkv * D;
    const bf16_t* kb = k_cache + (size_t)b * S * row_stride + (size_t)hk * D + lane * C;
    const bf16_t* vb = v_cache + (size_t)b * S * row_stride + (size_t)hk * D + lane * C;
    for (int j = start + warp; j < end; j += DEC_WARPS) {
        float kv[C];
        float vv[C];
        load_row<D>(kb + (size_t)j * row_stride, kv);
        load_row<D>(vb + (size_t)j * row_stride, vv);
#pragma unroll
        for (int g = 0; g < DEC_MAX_GROUP; ++g) {
            if (g < group) {
                float s = 0.0f;
#pragma unroll
                for (int c = 0; c < C; ++c) s = fmaf(qv[g][c], kv[c], s);
                s = warp_sum(s);
                float mn = fmaxf(m[g], s);
                float alpha = exp2f(m[g] - mn);
                float p = exp2f(s - mn);
                l[g] = l[g] * alpha + p;
                m[g] = mn;
#pragma unroll
                for (int c = 0; c < C; ++c) acc[g][c] = fmaf(p, vv[c], acc[g][c] * alpha);
            }
        }
    }

#pragma unroll
    for (int g = 0; g < DEC_MAX_GROUP; ++g) {
        if (g < group) {
            if (lane == 0) {
                sM[warp][g] = m[g];
                sL[warp][g] = l[g];
            }
#pragma unroll
            for (int c = 0; c < C; ++c) sA[warp][g][lane * C + c] = acc[g][c];
        }
    }
    __syncthreads();

    for (int i = threadIdx.x; i < group * D; i += DEC_THREADS) {
        const int g = i / D;
        const int d = i % D;
        float mx = -PP_INF;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; ++w) mx = fmaxf(mx, sM[w][g]);
        float a = 0.0f;
        float s = 0.0f;
        if (mx != -PP_INF) {
#pragma unroll
            for (int w = 0; w < DEC_WARPS; ++w) {
                float f = exp2f(sM[w][g] - mx);
                a = fmaf(sA[w][g][d], f, a);
                s = fmaf(sL[w][g], f, s);
            }
        }
        const size_t slot = ((size_t)b * Hq + hk * group + g) * splits + split;
        part_o[slot * D + d] = a;
        if (d == 0) {
            part_ml[slot * 2] = mx;
            part_ml[slot * 2 + 1] = s;
        }
    }
}

extern "C" __global__ void __launch_bounds__(DEC_THREADS)
decode_attn_partial_d64(const bf16_t* q, const bf16_t* k_cache, const bf16_t* v_cache,
                        const int* lengths, float* part_o, float* part_ml, int S, int Hq, int Hkv,
                        int split_len, float scale) {
    decode_partial<64>(q, k_cache, v_cache, lengths, part_o, part_ml, S, Hq, Hkv, split_len, scale);
}

extern "C" __global__ void __launch_bounds__(DEC_THREADS)
decode_attn_partial_d128(const bf16_t* q, const bf16_t* k_cache, const bf16_t* v_cache,
                         const int* lengths, float* part_o, float* part_ml, int S, int Hq, int Hkv,
                         int split_len, float scale) {
    decode_partial<128>(q, k_cache, v_cache, lengths, part_o, part_ml, S, Hq, Hkv, split_len,
                        scale);
}

// out[b, h, :] from the splits' partials: one block of exactly D threads per
// (h, b), thread d owning dim d.
extern "C" __global__ void decode_attn_combine(const float* __restrict__ part_o,
                                               const float* __restrict__ part_ml,
                                               bf16_t* __restrict__ out, int Hq, int splits) {
    const int D = blockDim.x;
    const int d = threadIdx.x;
    const int h = blockIdx.x;
    const int b = blockIdx.y;
    const size_t base = ((size_t)b * Hq + h) * splits;
    float mx = -PP_INF;
    for (int s = 0; s < splits; ++s) mx = fmaxf(mx, part_ml[(base + s) * 2]);
    float a = 0.0f;
    float l = 0.0f;
    for (int s = 0; s < splits; ++s) {
        float ms = part_ml[(base + s) * 2];
        if (ms == -PP_INF) continue;
        float f = exp2f(ms - mx);
        l = fmaf(part_ml[(base + s) * 2 + 1], f, l);
        a = fmaf(part_o[(base + s) * D + d], f, a);
    }
    out[((size_t)b * Hq + h) * D + d] = f32_to_bf16(a / l);
}
