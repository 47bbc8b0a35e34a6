// Fused cross-entropy over bf16 logits [N, V] for one chunk of N token rows.
// The model computes the LM-head logits a chunk of rows at a time in bf16, so
// no [B, T, V] float tensor ever exists. Forward keeps one f32 logsumexp per
// row; backward overwrites the chunk's logits with their gradient in place:
//   loss[r]  = w[r] * (lse[r] - x[r, t[r]])
//   dx[r, v] = w[r] * scale * (softmax(x[r])[v] - [v == t[r]])
// A row counts only when its weight (the loss mask, optionally normalised) is
// non-zero and its target lies in [0, V); other rows get loss 0, gradient 0.
// softmax_entropy gives each row's entropy from the forward's lse:
//   H[r] = lse[r] - sum_v softmax(x[r])[v] * x[r, v]
// One block per row streams the vocabulary in chunks of the block's width.

#define CE_THREADS 512

__device__ __forceinline__ bool ce_valid(int t, float w, int V) {
    return w != 0.0f && t >= 0 && t < V;
}

extern "C" __global__ void __launch_bounds__(CE_THREADS)
cross_entropy_fwd(const bf16_t* __restrict__ logits, const int* __restrict__ targets,
                  const float* __restrict__ weights, float* __restrict__ lse,
                  float* __restrict__ loss, int V) {
    __shared__ float scratch[32];
    const size_t row = blockIdx.x;
    const bf16_t* x = logits + row * V;
    float m = -PP_INF;
    float s = 0.0f;
    for (int v = threadIdx.x; v < V; v += CE_THREADS) {
        float z = bf16_to_f32(x[v]);
        if (z > m) {
            s = s * expf(m - z) + 1.0f;
            m = z;
        } else {
            s += expf(z - m);
        }
    }
    const float mx = block_max(m, scratch);
    const float total = block_sum(m == -PP_INF ? 0.0f : s * expf(m - mx), scratch);
    if (threadIdx.x == 0) {
        const float l = mx + logf(total);
        const int t = targets[row];
        const float w = weights[row];
        lse[row] = l;
        loss[row] = ce_valid(t, w, V) ? w * (l - bf16_to_f32(x[t])) : 0.0f;
    }
}

extern "C" __global__ void __launch_bounds__(CE_THREADS)
cross_entropy_bwd(bf16_t* __restrict__ logits, const int* __restrict__ targets,
                  const float* __restrict__ weights, const float* __restrict__ lse, float scale,
                  int V) {
    const size_t row = blockIdx.x;
    bf16_t* x = logits + row * V;
    const int t = targets[row];
    const float w = weights[row];
    const float coef = ce_valid(t, w, V) ? w * scale : 0.0f;
    const float l = lse[row];
    for (int v = threadIdx.x; v < V; v += CE_THREADS) {
        float p = expf(bf16_to_f32(x[v]) - l);
        x[v] = f32_to_bf16(coef * (p - (v == t ? 1.0f : 0.0f)));
    }
}

extern "C" __global__ void __launch_bounds__(CE_THREADS)
softmax_entropy(const bf16_t* __restrict__ logits, const float* __restrict__ lse,
                float* __restrict__ entropy, int V) {
    __shared__ float scratch[32];
    const size_t row = blockIdx.x;
    const bf16_t* x = logits + row * V;
    const float l = lse[row];
    float s = 0.0f;
    for (int v = threadIdx.x; v < V; v += CE_THREADS) {
        const float z = bf16_to_f32(x[v]);
        s = fmaf(expf(z - l), z, s);
    }
    const float total = block_sum(s, scratch);
    if (threadIdx.x == 0) entropy[row] = l - total;
}
