// Next-token sampling from f32 logits [B, V], one block per row.
// temperature <= 0 is greedy (the first index of the maximum). Otherwise, on
// z = logits / temperature:
//   top-k (0 < k < V): keep z >= the k-th largest value (ties at it stay);
//   top-p (0 < p < 1): of those, keep z >= the largest threshold whose kept
//                      probability mass is still >= p (the smallest nucleus);
//   draw u = uniform01(seed, counter + row) * (kept mass) and return the
//   first index, in vocabulary order, where the running kept mass exceeds u.
// Thresholds are found by bisection on the order-preserving integer image of
// the f32 values (32 passes over the row, no sort). The CPU reference uses
// the same generator, so a seed selects the same token on both.

#define SAMPLE_THREADS 1024

// Order-preserving map from f32 to u32: a < b  <=>  key(a) < key(b).
__device__ __forceinline__ u32 order_key(float f) {
    u32 u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS)
sample_tokens(const float* __restrict__ logits, int* __restrict__ out, int V, float temperature,
              int top_k, float top_p, u64 seed, u64 counter) {
    __shared__ float scratch[32];
    __shared__ float warp_mass[32];
    __shared__ int chosen;
    const size_t row = blockIdx.x;
    const float* x = logits + row * V;
    const int tid = threadIdx.x;

    if (temperature <= 0.0f) {
        float best = -PP_INF;
        int idx = V;
        for (int v = tid; v < V; v += SAMPLE_THREADS) {
            if (x[v] > best) {
                best = x[v];
                idx = v;
            }
        }
        const float mx = block_max(best, scratch);
        if (tid == 0) chosen = V;
        __syncthreads();
        if (best == mx) atomicMin(&chosen, idx);
        __syncthreads();
        if (tid == 0) out[row] = chosen < V ? chosen : 0;
        return;
    }

    const float inv_t = 1.0f / temperature;
    float local_max = -PP_INF;
    for (int v = tid; v < V; v += SAMPLE_THREADS) local_max = fmaxf(local_max, x[v] * inv_t);
    const float mx = block_max(local_max, scratch);

    u32 kept = 0;  // keep z with order_key(z) >= kept
    if (top_k > 0 && top_k < V) {
        for (int bit = 31; bit >= 0; --bit) {
            const u32 cand = kept | (1u << bit);
            float count = 0.0f;
            for (int v = tid; v < V; v += SAMPLE_THREADS) {
                count += order_key(x[v] * inv_t) >= cand ? 1.0f : 0.0f;
            }
            if (block_sum(count, scratch) >= (float)top_k) kept = cand;
        }
    }

    float mass = 0.0f;
    for (int v = tid; v < V; v += SAMPLE_THREADS) {
        const float z = x[v] * inv_t;
        if (order_key(z) >= kept) mass += __expf(z - mx);
    }
    float total = block_sum(mass, scratch);

    if (top_p > 0.0f && top_p < 1.0f) {
        // Largest key c with mass(z >= max(c, kept)) >= p * total.
        const float need = top_p * total;
        u32 nucleus = 0;
        for (int bit = 31; bit >= 0; --bit) {
            const u32 cand = nucleus | (1u << bit);
            const u32 floor_key = max(cand, kept);
            float m2 = 0.0f;
            for (int v = tid; v < V; v += SAMPLE_THREADS) {
                const float z = x[v] * inv_t;
                if (order_key(z) >= floor_key) m2 += __expf(z - mx);
            }
            if (block_sum(m2, scratch) >= need) nucleus = cand;
        }
        kept = max(kept, nucleus);
        mass = 0.0f;
        for (int v = tid; v < V; v += SAMPLE_THREADS) {
            const float z = x[v] * inv_t;
            if (order_key(z) >= kept) mass += __expf(z - mx);
        }
        total = block_sum(mass, scratch);
    }

    // Inverse CDF in vocabulary order: each thread owns a contiguous span,
    // an exclusive scan over the spans' masses finds the span holding u.
    const int span = (V + SAMPLE_THREADS - 1) / SAMPLE_THREADS;
    const int lo = min(V, tid * span);
    const int hi = min(V, lo + span);
    float own = 0.0f;
    int last_kept = -1;
    for (int v = lo; v < hi; ++v) {
        const float z = x[v] * inv_t;
        if (order_key(z) >= kept) {
            own += __expf(z - mx);
            last_kept = v;
        }
    }
    const int lane = tid & 31;
    const int warp = tid >> 5;
    float incl = own;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        float y = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += y;
    }
    if (lane == 31) warp_mass[warp] = incl;
    if (tid == 0) chosen = -1;
    __syncthreads();
    float before = incl - own;
    for (int w = 0; w < warp; ++w) before += warp_mass[w];

    const float u = uniform01(seed, counter + row) * total;
    if (own > 0.0f && u >= before && u < before + own) {
        float run = before;
        int pick = last_kept;
        for (int v = lo; v < hi; ++v) {
            const float z = x[v] * inv_t;
            if (order_key(z) >= kept) {
                run += __expf(z - mx);
                if (u < run) {
                    pick = v;
                    break;
                }
            }
        }
        atomicMax(&chosen, pick);
    }
    __syncthreads();
    // Rounding can leave u just past the last span's end: take the last kept
    // token then (the highest-indexed thread holding one).
    const bool none = chosen < 0;
    __syncthreads();
    if (none && last_kept >= 0) atomicMax(&chosen, last_kept);
    __syncthreads();
    if (tid == 0) out[row] = chosen;
}
