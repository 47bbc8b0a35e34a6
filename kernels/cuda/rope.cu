// Rotary position embedding in HF's rotate-half layout: dims i and i + D/2 of
// each head form a pair rotated by angle pos * inv_freq[i]. The host builds
// inv_freq [D/2] f32 (llama3 frequency scaling included), so one kernel
// serves every RoPE variant. Backward is the inverse rotation (sign = -1).
// x, y: [tokens, H, D] bf16 (y may alias x); pos: [tokens] i32.

__device__ __forceinline__ void rope_apply(const bf16_t* x, bf16_t* y,
                                           const int* __restrict__ pos,
                                           const float* __restrict__ inv_freq, long long tokens,
                                           int H, int D, float sign) {
    const int half = D / 2;
    const long long total = tokens * H * half;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += stride) {
        const int i = (int)(idx % half);
        const long long head = idx / half;
        const long long tok = head / H;
        float s, c;
        sincosf((float)pos[tok] * inv_freq[i], &s, &c);
        s *= sign;
        const long long base = head * D;
        const float x0 = bf16_to_f32(x[base + i]);
        const float x1 = bf16_to_f32(x[base + i + half]);
        y[base + i] = f32_to_bf16(x0 * c - x1 * s);
        y[base + i + half] = f32_to_bf16(x1 * c + x0 * s);
    }
}

extern "C" __global__ void rope_fwd(const bf16_t* x, bf16_t* y, const int* pos,
                                    const float* inv_freq, long long tokens, int H, int D) {
    rope_apply(x, y, pos, inv_freq, tokens, H, D, 1.0f);
}

extern "C" __global__ void rope_bwd(const bf16_t* dy, bf16_t* dx, const int* pos,
                                    const float* inv_freq, long long tokens, int H, int D) {
    rope_apply(dy, dx, pos, inv_freq, tokens, H, D, -1.0f);
}
