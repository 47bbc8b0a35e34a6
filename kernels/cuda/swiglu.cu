// SwiGLU of the LLaMA MLP: out = silu(gate) * up, elementwise over n values,
// computed in f32 and rounded once. Backward, with s = sigmoid(gate):
//   dgate = dout * up * s * (1 + gate * (1 - s)),  dup = dout * gate * s
// Eight bf16 per 16-byte access when all pointers are 16-byte aligned.

__device__ __forceinline__ float sigmoidf(float g) { return 1.0f / (1.0f + __expf(-g)); }

extern "C" __global__ void swiglu_fwd(const bf16_t* __restrict__ gate,
                                      const bf16_t* __restrict__ up, bf16_t* __restrict__ out,
                                      long long n) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const bool vec = ((((u64)gate) | ((u64)up) | ((u64)out)) & 15) == 0;
    long long done = 0;
    if (vec) {
        const long long n8 = n / 8;
        for (long long i = tid; i < n8; i += stride) {
            uint4 g = ((const uint4*)gate)[i];
            uint4 u = ((const uint4*)up)[i];
            u32 gw[4] = {g.x, g.y, g.z, g.w};
            u32 uw[4] = {u.x, u.y, u.z, u.w};
            u32 ow[4];
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                float g0 = bf16_lo(gw[j]), g1 = bf16_hi(gw[j]);
                ow[j] = pack_bf16x2(g0 * sigmoidf(g0) * bf16_lo(uw[j]),
                                    g1 * sigmoidf(g1) * bf16_hi(uw[j]));
            }
            ((uint4*)out)[i] = make_uint4(ow[0], ow[1], ow[2], ow[3]);
        }
        done = n8 * 8;
    }
    for (long long i = done + tid; i < n; i += stride) {
        float g = bf16_to_f32(gate[i]);
        out[i] = f32_to_bf16(g * sigmoidf(g) * bf16_to_f32(up[i]));
    }
}

__device__ __forceinline__ void swiglu_grad(float g, float u, float d, float& dg, float& du) {
    float s = sigmoidf(g);
    du = d * g * s;
    dg = d * u * s * (1.0f + g * (1.0f - s));
}

extern "C" __global__ void swiglu_bwd(const bf16_t* __restrict__ gate,
                                      const bf16_t* __restrict__ up,
                                      const bf16_t* __restrict__ dout,
                                      bf16_t* __restrict__ dgate, bf16_t* __restrict__ dup,
                                      long long n) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const bool vec =
        ((((u64)gate) | ((u64)up) | ((u64)dout) | ((u64)dgate) | ((u64)dup)) & 15) == 0;
    long long done = 0;
    if (vec) {
        const long long n8 = n / 8;
        for (long long i = tid; i < n8; i += stride) {
            uint4 g = ((const uint4*)gate)[i];
            uint4 u = ((const uint4*)up)[i];
            uint4 d = ((const uint4*)dout)[i];
            u32 gw[4] = {g.x, g.y, g.z, g.w};
            u32 uw[4] = {u.x, u.y, u.z, u.w};
            u32 dw[4] = {d.x, d.y, d.z, d.w};
            u32 ga[4];
            u32 ua[4];
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                float dg0, du0, dg1, du1;
                swiglu_grad(bf16_lo(gw[j]), bf16_lo(uw[j]), bf16_lo(dw[j]), dg0, du0);
                swiglu_grad(bf16_hi(gw[j]), bf16_hi(uw[j]), bf16_hi(dw[j]), dg1, du1);
                ga[j] = pack_bf16x2(dg0, dg1);
                ua[j] = pack_bf16x2(du0, du1);
            }
            ((uint4*)dgate)[i] = make_uint4(ga[0], ga[1], ga[2], ga[3]);
            ((uint4*)dup)[i] = make_uint4(ua[0], ua[1], ua[2], ua[3]);
        }
        done = n8 * 8;
    }
    for (long long i = done + tid; i < n; i += stride) {
        float dg, du;
        swiglu_grad(bf16_to_f32(gate[i]), bf16_to_f32(up[i]), bf16_to_f32(dout[i]), dg, du);
        dgate[i] = f32_to_bf16(dg);
        dup[i] = f32_to_bf16(du);
    }
}
