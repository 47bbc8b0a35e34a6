// Shared helpers for every poker-pipe kernel. The kernels crate prepends this
// file to each module's source before NVRTC sees it, so no kernel includes a
// header: NVRTC on a bare machine has no CUDA or C library headers to find.

typedef unsigned short bf16_t;  // bfloat16 kept as its raw bits
typedef unsigned int u32;
typedef unsigned long long u64;

#define PP_INF __int_as_float(0x7f800000)
#define PP_LOG2E 1.4426950408889634f
#define PP_LN2 0.6931471805599453f

// bf16 is the top half of an f32, so widening is a shift.
__device__ __forceinline__ float bf16_to_f32(bf16_t h) {
    return __uint_as_float(((u32)h) << 16);
}

// Narrowing rounds to nearest, ties to even, like torch's `.to(bfloat16)`;
// NaN stays a quiet NaN with its sign, infinities stay infinite.
__device__ __forceinline__ bf16_t f32_to_bf16(float f) {
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return (bf16_t)((u >> 16) | 0x0040u);
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_t)(u >> 16);
}

// Two bf16 packed in one 32-bit word, low half first (memory order).
__device__ __forceinline__ float bf16_lo(u32 w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16_hi(u32 w) { return __uint_as_float(w & 0xffff0000u); }
__device__ __forceinline__ u32 pack_bf16x2(float lo, float hi) {
    return ((u32)f32_to_bf16(hi) << 16) | (u32)f32_to_bf16(lo);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Block-wide sum for blocks of up to 1024 threads (a multiple of 32). `scratch`
// holds 32 floats; every thread gets the total. Two barriers, so calls in a
// row may reuse the same scratch.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    int nwarps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = lane < nwarps ? scratch[lane] : 0.0f;
    return warp_sum(t);
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    int nwarps = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = lane < nwarps ? scratch[lane] : -PP_INF;
    return warp_max(t);
}

// SplitMix64 finaliser: the counter-based generator behind sampling. The CPU
// reference uses the same function, so a seed picks the same token on both.
__device__ __forceinline__ u64 splitmix64(u64 x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

// Uniform in [0, 1) from the top 24 bits: exactly representable in f32.
__device__ __forceinline__ float uniform01(u64 seed, u64 counter) {
    u64 r = splitmix64(seed ^ splitmix64(counter));
    return (float)(r >> 40) * (1.0f / 16777216.0f);
}
