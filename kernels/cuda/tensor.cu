// f32 helpers behind the Backend trait: the trait's buffers are f32 (master
// precision), so the backend narrows operands to bf16 for the fused kernels
// and tensor cores and widens their results back. Besides the two casts this
// module has the plain memory ops the trait needs (axpy, scale, strided row
// copies, row gather and scatter-add, dropout) and an f32 attention for the
// shapes the flash kernels do not take: left padding (kv_start), decoding
// against a KV cache (q_offset, kv_cap) and head dims other than 64 and 128.
// All loops are grid-stride, so any grid size is correct.

#define TS_THREADS 256

extern "C" __global__ void __launch_bounds__(TS_THREADS)
cast_f32_bf16(const float* __restrict__ x, bf16_t* __restrict__ y, long long n) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        y[i] = f32_to_bf16(x[i]);
    }
}

extern "C" __global__ void __launch_bounds__(TS_THREADS)
cast_bf16_f32(const bf16_t* __restrict__ x, float* __restrict__ y, long long n) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        y[i] = bf16_to_f32(x[i]);
    }
}

// y += alpha * x
extern "C" __global__ void __launch_bounds__(TS_THREADS)
axpy_f32(float* __restrict__ y, const float* __restrict__ x, float alpha, long long n) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        y[i] = fmaf(alpha, x[i], y[i]);
    }
}

extern "C" __global__ void __launch_bounds__(TS_THREADS)
scale_f32(float* __restrict__ y, float alpha, long long n) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        y[i] *= alpha;
    }
}

// For each block c < count: rows [src_row, src_row + rows) of block c of src
// (blocks of src_block rows) go to rows [dst_row, ..) of block c of dst.
extern "C" __global__ void __launch_bounds__(TS_THREADS)
copy_rows_f32(const float* __restrict__ src, float* __restrict__ dst, long long count,
              long long rows, long long width, long long src_block, long long src_row,
              long long dst_block, long long dst_row) {
    const long long n = count * rows * width;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const long long col = i % width;
        const long long r = (i / width) % rows;
        const long long c = i / (width * rows);
        dst[(c * dst_block + dst_row + r) * width + col] =
            src[(c * src_block + src_row + r) * width + col];
    }
}

// out[i] = x[idx[i]], rows of width.
extern "C" __global__ void __launch_bounds__(TS_THREADS)
gather_rows_f32(const float* __restrict__ x, const int* __restrict__ idx,
                float* __restrict__ out, long long n, long long width) {
    const long long total = n * width;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const long long r = i / width;
        out[i] = x[(long long)idx[r] * width + i % width];
    }
}

// dx[idx[i]] += dy[i]; repeated indices add atomically.
extern "C" __global__ void __launch_bounds__(TS_THREADS)
scatter_add_rows_f32(const float* __restrict__ dy, const int* __restrict__ idx,
                     float* __restrict__ dx, long long n, long long width) {
    const long long total = n * width;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const long long r = i / width;
        atomicAdd(&dx[(long long)idx[r] * width + i % width], dy[i]);
    }
}

// Inverted dropout over rows of width; element c of row r is kept iff
// splitmix64(seed ^ row_keys[r] ^ c) >> 40, over 2^24, is at least p (the
// CPU backend's `dropout_uniform(seed ^ key, c)`, bit for bit).
extern "C" __global__ void __launch_bounds__(TS_THREADS)
dropout_f32(const float* __restrict__ x, float* __restrict__ y,
            const u64* __restrict__ row_keys, long long n, long long width, float p,
            u64 seed) {
    const float keep = 1.0f / (1.0f - p);
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const u64 key = seed ^ row_keys[i / width];
        const float u = (float)(splitmix64(key ^ (u64)(i % width)) >> 40) * (1.0f / 16777216.0f);
        y[i] = u >= p ? x[i] * keep : 0.0f;
    }
}

// ---- general causal attention in f32 ---------------------------------------
//
// One warp per (batch, head, query). Lane l holds elements l, l + 32, ... of
// the head, so head_dim <= 32 * ATT_F32_SLOTS. Query i of batch b sees key j
// iff kv_start[b] <= j <= q_offset + i (and j < kv_len). q/out are
// [B, q_len, H, D]; k/v are [B, kv_cap, Hkv, D]; lse is [B, H, q_len].

#define ATT_F32_SLOTS 8
#define ATT_F32_WARPS 4

struct AttF32Row {
    int b, h, i, hk, lo, hi;
    bool valid;
};

__device__ __forceinline__ AttF32Row att_f32_row(const int* kv_start, int batch, int q_len,
                                                 int kv_len, int q_offset, int heads,
                                                 int kv_heads) {
    AttF32Row r;
    const long long row = (long long)blockIdx.x * ATT_F32_WARPS + (threadIdx.x >> 5);
    r.valid = row < (long long)batch * heads * q_len;
    if (!r.valid) return r;
    r.i = (int)(row % q_len);
    r.h = (int)((row / q_len) % heads);
    r.b = (int)(row / ((long long)q_len * heads));
    r.hk = r.h / (heads / kv_heads);
    r.lo = kv_start[r.b];
    r.hi = min(q_offset + r.i, kv_len - 1);
    return r;
}

extern "C" __global__ void __launch_bounds__(32 * ATT_F32_WARPS)
attention_fwd_f32(const float* __restrict__ q, const float* __restrict__ k,
                  const float* __restrict__ v, const int* __restrict__ kv_start,
                  float* __restrict__ out, float* __restrict__ lse, int batch, int q_len,
                  int kv_len, int kv_cap, int q_offset, int heads, int kv_heads, int head_dim,
                  float scale) {
    const AttF32Row r = att_f32_row(kv_start, batch, q_len, kv_len, q_offset, heads, kv_heads);
    if (!r.valid) return;
    const int lane = threadIdx.x & 31;
    const long long q_base = (((long long)r.b * q_len + r.i) * heads + r.h) * head_dim;
    float qv[ATT_F32_SLOTS], acc[ATT_F32_SLOTS];
#pragma unroll
    for (int s = 0; s < ATT_F32_SLOTS; s++) {
        const int d = lane + 32 * s;
        qv[s] = d < head_dim ? q[q_base + d] : 0.0f;
        acc[s] = 0.0f;
    }
    float m = -PP_INF, l = 0.0f;
    for (int j = r.lo; j <= r.hi; j++) {
        const long long kv_base = (((long long)r.b * kv_cap + j) * kv_heads + r.hk) * head_dim;
        float dot = 0.0f;
#pragma unroll
        for (int s = 0; s < ATT_F32_SLOTS; s++) {
            const int d = lane + 32 * s;
            if (d < head_dim) dot = fmaf(qv[s], k[kv_base + d], dot);
        }
        const float score = warp_sum(dot) * scale;
        const float m_new = fmaxf(m, score);
        const float corr = expf(m - m_new);
        const float p = expf(score - m_new);
        l = l * corr + p;
#pragma unroll
        for (int s = 0; s < ATT_F32_SLOTS; s++) {
            const int d = lane + 32 * s;
            if (d < head_dim) acc[s] = fmaf(p, v[kv_base + d], acc[s] * corr);
        }
        m = m_new;
    }
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
    for (int s = 0; s < ATT_F32_SLOTS; s++) {
        const int d = lane + 32 * s;
        if (d < head_dim) out[q_base + d] = acc[s] * inv;
    }
    if (lane == 0) {
        lse[((long long)r.b * heads + r.h) * q_len + r.i] = l > 0.0f ? m + logf(l) : -PP_INF;
    }
}

// Gradients from the saved lse: dq is written, dk and dv (zeroed by the
// caller, [B, kv_cap, Hkv, D]) are accumulated atomically over queries.
extern "C" __global__ void __launch_bounds__(32 * ATT_F32_WARPS)
attention_bwd_f32(const float* __restrict__ q, const float* __restrict__ k,
                  const float* __restrict__ v, const float* __restrict__ out,
                  const float* __restrict__ lse, const float* __restrict__ dout,
                  const int* __restrict__ kv_start, float* __restrict__ dq,
                  float* __restrict__ dk, float* __restrict__ dv, int batch, int q_len,
                  int kv_len, int kv_cap, int q_offset, int heads, int kv_heads, int head_dim,
                  float scale) {
    const AttF32Row r = att_f32_row(kv_start, batch, q_len, kv_len, q_offset, heads, kv_heads);
    if (!r.valid) return;
    const int lane = threadIdx.x & 31;
    const long long q_base = (((long long)r.b * q_len + r.i) * heads + r.h) * head_dim;
    const float row_lse = lse[((long long)r.b * heads + r.h) * q_len + r.i];
    float qv[ATT_F32_SLOTS], dov[ATT_F32_SLOTS], dqv[ATT_F32_SLOTS];
    float delta = 0.0f;
#pragma unroll
    for (int s = 0; s < ATT_F32_SLOTS; s++) {
        const int d = lane + 32 * s;
        const bool in = d < head_dim;
        qv[s] = in ? q[q_base + d] : 0.0f;
        dov[s] = in ? dout[q_base + d] : 0.0f;
        dqv[s] = 0.0f;
        if (in) delta = fmaf(dov[s], out[q_base + d], delta);
    }
    delta = warp_sum(delta);
    for (int j = r.lo; j <= r.hi; j++) {
        const long long kv_base = (((long long)r.b * kv_cap + j) * kv_heads + r.hk) * head_dim;
        float dot = 0.0f, dp = 0.0f;
#pragma unroll
        for (int s = 0; s < ATT_F32_SLOTS; s++) {
            const int d = lane + 32 * s;
            if (d < head_dim) {
                dot = fmaf(qv[s], k[kv_base + d], dot);
                dp = fmaf(dov[s], v[kv_base + d], dp);
            }
        }
        const float p = expf(warp_sum(dot) * scale - row_lse);
        const float ds = p * (warp_sum(dp) - delta) * scale;
#pragma unroll
        for (int s = 0; s < ATT_F32_SLOTS; s++) {
            const int d = lane + 32 * s;
            if (d < head_dim) {
                dqv[s] = fmaf(ds, k[kv_base + d], dqv[s]);
                atomicAdd(&dk[kv_base + d], ds * qv[s]);
                atomicAdd(&dv[kv_base + d], p * dov[s]);
            }
        }
    }
#pragma unroll
    for (int s = 0; s < ATT_F32_SLOTS; s++) {
        const int d = lane + 32 * s;
        if (d < head_dim) dq[q_base + d] = dqv[s];
    }
}
