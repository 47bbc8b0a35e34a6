// Fused AdamW step over one flat parameter tensor (decoupled weight decay,
// bias correction, as torch.optim.AdamW):
//   p <- p * (1 - lr * wd)
//   m <- b1 m + (1 - b1) g          v <- b2 v + (1 - b2) g^2
//   p <- p - (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)
// with g = grad * scale[0], bc1 = 1 - b1^t, bc2 = 1 - b2^t from the host.
// `scale` lives on the device so gradient clipping (grad_norm_finish writes the
// clip factor) needs no host round trip. The f32 master weights, m and v are
// updated in place and the bf16 copy the forward pass reads is written in the
// same pass: 16 + 2 + |g| bytes per parameter, the floor for this update.

#define ADAMW_THREADS 256

struct AdamHyper {
    float lr, beta1, beta2, eps, wd, bc1, bc2, scale;
};

__device__ __forceinline__ float adamw_one(float p, float g, float& m, float& v,
                                           const AdamHyper& h) {
    p *= 1.0f - h.lr * h.wd;
    m = h.beta1 * m + (1.0f - h.beta1) * g;
    v = h.beta2 * v + (1.0f - h.beta2) * g * g;
    float denom = sqrtf(v) / sqrtf(h.bc2) + h.eps;
    return p - (h.lr / h.bc1) * (m / denom);
}

__device__ __forceinline__ float load_grad(const float* g, long long i) { return g[i]; }
__device__ __forceinline__ float load_grad(const bf16_t* g, long long i) { return bf16_to_f32(g[i]); }

__device__ __forceinline__ float4 load_grad4(const float* g, long long i) {
    return *(const float4*)(g + i);
}
__device__ __forceinline__ float4 load_grad4(const bf16_t* g, long long i) {
    uint2 w = *(const uint2*)(g + i);
    return make_float4(bf16_lo(w.x), bf16_hi(w.x), bf16_lo(w.y), bf16_hi(w.y));
}

template <typename G>
__device__ void adamw_step(float* __restrict__ master, float* __restrict__ m,
                           float* __restrict__ v, bf16_t* __restrict__ param,
                           const G* __restrict__ grad, const float* __restrict__ scale,
                           long long n, float lr, float beta1, float beta2, float eps, float wd,
                           float bc1, float bc2) {
    const AdamHyper h = {lr, beta1, beta2, eps, wd, bc1, bc2, scale[0]};
    const long long stride = (long long)gridDim.x * blockDim.x;
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    // 16-byte vectors when every pointer allows them; the condition is the
    // same for all threads, so there is no divergence.
    const u64 grad_align = sizeof(G) == 4 ? 15 : 7;
    const bool vec = ((((u64)master) | ((u64)m) | ((u64)v)) & 15) == 0 &&
                     (((u64)param) & 7) == 0 && (((u64)grad) & grad_align) == 0;
    long long done = 0;
    if (vec) {
        const long long n4 = n / 4;
        for (long long i = tid; i < n4; i += stride) {
            const long long e = i * 4;
            float4 p = *(float4*)(master + e);
            float4 mm = *(float4*)(m + e);
            float4 vv = *(float4*)(v + e);
            float4 g = load_grad4(grad, e);
            p.x = adamw_one(p.x, g.x * h.scale, mm.x, vv.x, h);
            p.y = adamw_one(p.y, g.y * h.scale, mm.y, vv.y, h);
            p.z = adamw_one(p.z, g.z * h.scale, mm.z, vv.z, h);
            p.w = adamw_one(p.w, g.w * h.scale, mm.w, vv.w, h);
            *(float4*)(master + e) = p;
            *(float4*)(m + e) = mm;
            *(float4*)(v + e) = vv;
            *(uint2*)(param + e) = make_uint2(pack_bf16x2(p.x, p.y), pack_bf16x2(p.z, p.w));
        }
        done = n4 * 4;
    }
    for (long long i = done + tid; i < n; i += stride) {
        float mm = m[i];
        float vv = v[i];
        float p = adamw_one(master[i], load_grad(grad, i) * h.scale, mm, vv, h);
        master[i] = p;
        m[i] = mm;
        v[i] = vv;
        param[i] = f32_to_bf16(p);
    }
}

extern "C" __global__ void __launch_bounds__(ADAMW_THREADS)
adamw_f32grad(float* master, float* m, float* v, bf16_t* param, const float* grad,
              const float* scale, long long n, float lr, float beta1, float beta2, float eps,
              float wd, float bc1, float bc2) {
    adamw_step<float>(master, m, v, param, grad, scale, n, lr, beta1, beta2, eps, wd, bc1, bc2);
}

extern "C" __global__ void __launch_bounds__(ADAMW_THREADS)
adamw_bf16grad(float* master, float* m, float* v, bf16_t* param, const bf16_t* grad,
               const float* scale, long long n, float lr, float beta1, float beta2, float eps,
               float wd, float bc1, float bc2) {
    adamw_step<bf16_t>(master, m, v, param, grad, scale, n, lr, beta1, beta2, eps, wd, bc1, bc2);
}
