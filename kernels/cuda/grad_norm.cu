// Global gradient L2 norm in two passes: sumsq_* writes one partial sum of
// squares per block into partials[offset + blockIdx.x] (call once per gradient
// tensor with its own offset), then grad_norm_finish adds all partials in a
// fixed order in f64 and writes out[0] = norm and out[1] = the clip factor
// min(1, max_norm / (norm + 1e-6)) (1 when max_norm <= 0), which AdamW reads
// on the device.

#define GN_THREADS 256

extern "C" __global__ void __launch_bounds__(GN_THREADS)
sumsq_f32(const float* __restrict__ x, long long n, float* __restrict__ partials, int offset) {
    __shared__ float scratch[32];
    float s = 0.0f;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        s = fmaf(x[i], x[i], s);
    }
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) partials[offset + blockIdx.x] = s;
}

extern "C" __global__ void __launch_bounds__(GN_THREADS)
sumsq_bf16(const bf16_t* __restrict__ x, long long n, float* __restrict__ partials, int offset) {
    __shared__ float scratch[32];
    float s = 0.0f;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float v = bf16_to_f32(x[i]);
        s = fmaf(v, v, s);
    }
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) partials[offset + blockIdx.x] = s;
}

extern "C" __global__ void __launch_bounds__(GN_THREADS)
grad_norm_finish(const float* __restrict__ partials, int count, float max_norm,
                 float* __restrict__ out) {
    __shared__ double sums[GN_THREADS];
    double s = 0.0;
    for (int i = threadIdx.x; i < count; i += GN_THREADS) s += (double)partials[i];
    sums[threadIdx.x] = s;
    __syncthreads();
    for (int w = GN_THREADS / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) sums[threadIdx.x] += sums[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        const float norm = (float)sqrt(sums[0]);
        out[0] = norm;
        out[1] = max_norm > 0.0f ? fminf(1.0f, max_norm / (norm + 1e-6f)) : 1.0f;
    }
}
