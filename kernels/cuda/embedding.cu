// Token embedding: out[n, :] = table[ids[n], :] for table [V, H] bf16.
// Backward adds each row of dout into an f32 table gradient with atomics
// (repeated ids collide; f32 addition order is the only nondeterminism).
// Ids outside [0, V) are rejected on the host; here they write zeros and add
// nothing, so a bad id can never touch memory outside the table.

extern "C" __global__ void embedding_fwd(const int* __restrict__ ids,
                                         const bf16_t* __restrict__ table,
                                         bf16_t* __restrict__ out, int V, int H) {
    const size_t n = blockIdx.x;
    const int id = ids[n];
    const bool ok = id >= 0 && id < V;
    const bf16_t* src = table + (size_t)(ok ? id : 0) * H;
    bf16_t* dst = out + n * H;
    for (int h = threadIdx.x; h < H; h += blockDim.x) dst[h] = ok ? src[h] : (bf16_t)0;
}

extern "C" __global__ void embedding_bwd(const int* __restrict__ ids,
                                         const bf16_t* __restrict__ dout,
                                         float* __restrict__ dtable, int V, int H) {
    const size_t n = blockIdx.x;
    const int id = ids[n];
    if (id < 0 || id >= V) return;
    const bf16_t* src = dout + n * H;
    float* dst = dtable + (size_t)id * H;
    for (int h = threadIdx.x; h < H; h += blockDim.x) atomicAdd(dst + h, bf16_to_f32(src[h]));
}
