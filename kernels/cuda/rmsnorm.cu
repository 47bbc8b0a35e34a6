// RMSNorm over the last dimension, as HF LlamaRMSNorm:
//   y = bf16( w * bf16(x * rstd) ),  rstd = 1 / sqrt(mean(x^2) + eps)
// Forward saves rstd [N] f32 for backward. Backward:
//   dx = rstd * (dy*w - xhat * mean(dy*w*xhat)),  xhat = x * rstd
//   dw = sum over rows of dy * xhat
// dw is reduced deterministically: each backward block sums its rows into one
// row of dw_partial [blocks, H] (columns held in registers), then
// sum_rows_f32 adds the partial rows in a fixed order.

#define RMS_THREADS 256
#define RMS_MAXW 16  // pairs per thread: H <= 2 * 256 * 16 = 8192

extern "C" __global__ void __launch_bounds__(RMS_THREADS)
rmsnorm_fwd(const bf16_t* __restrict__ x, const bf16_t* __restrict__ w, bf16_t* __restrict__ y,
            float* __restrict__ rstd, int H, float eps) {
    __shared__ float scratch[32];
    const size_t row = blockIdx.x;
    const u32* xr = (const u32*)(x + row * H);
    const u32* wr = (const u32*)w;
    u32* yr = (u32*)(y + row * H);
    const int words = H / 2;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < words; i += RMS_THREADS) {
        u32 v = xr[i];
        float a = bf16_lo(v), b = bf16_hi(v);
        ss = fmaf(a, a, fmaf(b, b, ss));
    }
    ss = block_sum(ss, scratch);
    const float r = rsqrtf(ss / (float)H + eps);
    for (int i = threadIdx.x; i < words; i += RMS_THREADS) {
        u32 v = xr[i];
        u32 g = wr[i];
        float a = bf16_to_f32(f32_to_bf16(bf16_lo(v) * r));
        float b = bf16_to_f32(f32_to_bf16(bf16_hi(v) * r));
        yr[i] = pack_bf16x2(a * bf16_lo(g), b * bf16_hi(g));
    }
    if (threadIdx.x == 0) rstd[row] = r;
}

// Block b handles rows [b * rows_per_block, ...) and writes dw_partial[b, :].
extern "C" __global__ void __launch_bounds__(RMS_THREADS)
rmsnorm_bwd(const bf16_t* __restrict__ x, const bf16_t* __restrict__ w,
            const bf16_t* __restrict__ dy, const float* __restrict__ rstd,
            bf16_t* __restrict__ dx, float* __restrict__ dw_partial, int N, int H,
            int rows_per_block) {
    __shared__ float scratch[32];
    const int words = H / 2;
    const u32* wr = (const u32*)w;
    float dw_lo[RMS_MAXW];
    float dw_hi[RMS_MAXW];
#pragma unroll
    for (int k = 0; k < RMS_MAXW; ++k) {
        dw_lo[k] = 0.0f;
        dw_hi[k] = 0.0f;
    }
    const int first = blockIdx.x * rows_per_block;
    const int last = min(N, first + rows_per_block);
    for (int row = first; row < last; ++row) {
        const u32* xr = (const u32*)(x + (size_t)row * H);
        const u32* gr = (const u32*)(dy + (size_t)row * H);
        const float r = rstd[row];
        float dot = 0.0f;
#pragma unroll
        for (int k = 0; k < RMS_MAXW; ++k) {
            const int i = threadIdx.x + k * RMS_THREADS;
            if (i < words) {
                u32 xv = xr[i], gv = gr[i], wv = wr[i];
                float xa = bf16_lo(xv) * r, xb = bf16_hi(xv) * r;
                float ga = bf16_lo(gv), gb = bf16_hi(gv);
                dot = fmaf(ga * bf16_lo(wv), xa, fmaf(gb * bf16_hi(wv), xb, dot));
                dw_lo[k] = fmaf(ga, xa, dw_lo[k]);
                dw_hi[k] = fmaf(gb, xb, dw_hi[k]);
            }
        }
        const float mean = block_sum(dot, scratch) / (float)H;
        u32* out = (u32*)(dx + (size_t)row * H);
#pragma unroll
        for (int k = 0; k < RMS_MAXW; ++k) {
            const int i = threadIdx.x + k * RMS_THREADS;
            if (i < words) {
                u32 xv = xr[i], gv = gr[i], wv = wr[i];
                float a = r * (bf16_lo(gv) * bf16_lo(wv) - bf16_lo(xv) * r * mean);
                float b = r * (bf16_hi(gv) * bf16_hi(wv) - bf16_hi(xv) * r * mean);
                out[i] = pack_bf16x2(a, b);
            }
        }
    }
    float* part = dw_partial + (size_t)blockIdx.x * H;
#pragma unroll
    for (int k = 0; k < RMS_MAXW; ++k) {
        const int i = threadIdx.x + k * RMS_THREADS;
        if (i < words) {
            part[2 * i] = dw_lo[k];
            part[2 * i + 1] = dw_hi[k];
        }
    }
}

// out[c] = sum_r in[r, c] for a [rows, cols] f32 matrix, rows added in order.
extern "C" __global__ void sum_rows_f32(const float* __restrict__ in, float* __restrict__ out,
                                        int rows, int cols) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float s = 0.0f;
    for (int r = 0; r < rows; ++r) s += in[(size_t)r * cols + c];
    out[c] = s;
}
