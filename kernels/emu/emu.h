// A CPU stand-in for the CUDA built-ins the kernels use, just enough to run
// them under kernels/emu/check.cpp: each CUDA thread is a std::thread, blocks
// run one after another (so `__shared__` as a static is per block), and
// __syncthreads and warp shuffles are barriers.
#include <thread>
#include <barrier>
#include <vector>
#include <cmath>
#include <cstring>
#include <atomic>
#include <functional>
#include <algorithm>
#include <memory>
using std::min; using std::max;
struct dim3 { unsigned x = 1, y = 1, z = 1; };
thread_local dim3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
struct Warp { std::unique_ptr<std::barrier<>> bar; float f[32]; };
std::barrier<>* g_block;
std::vector<std::unique_ptr<Warp>> g_warps;
inline Warp& warp_() { return *g_warps[threadIdx.x / 32]; }
inline void __syncthreads() { g_block->arrive_and_wait(); }
inline float shfl_(float v, int src) {
    Warp& w = warp_(); int lane = threadIdx.x & 31;
    w.f[lane] = v; w.bar->arrive_and_wait(); float r = w.f[src & 31]; w.bar->arrive_and_wait(); return r;
}
inline float __shfl_sync(unsigned, float v, int src) { return shfl_(v, src); }
inline float __shfl_xor_sync(unsigned, float v, int o) { return shfl_(v, (threadIdx.x & 31) ^ o); }
inline float __shfl_up_sync(unsigned, float v, int o) { int l = threadIdx.x & 31; float r = shfl_(v, l >= o ? l - o : l); return r; }
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned i; memcpy(&i, &f, 4); return i; }
inline float __expf(float x) { return expf(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline void sincosf_(float x, float* s, float* c) { *s = sinf(x); *c = cosf(x); }
#define sincosf sincosf_
inline int atomicMin(int* p, int v) { std::atomic_ref<int> a(*p); int o = a.load(); while (v < o && !a.compare_exchange_weak(o, v)) {} return o; }
inline int atomicMax(int* p, int v) { std::atomic_ref<int> a(*p); int o = a.load(); while (v > o && !a.compare_exchange_weak(o, v)) {} return o; }
inline float atomicAdd(float* p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }
struct uint2 { unsigned x, y; }; struct uint4 { unsigned x, y, z, w; }; struct float4 { float x, y, z, w; };
inline uint2 make_uint2(unsigned a, unsigned b) { return {a, b}; }
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return {a, b, c, d}; }
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__
#define __launch_bounds__(x)
#define __align__(n) __attribute__((aligned(n)))

template <class F>
void launch(dim3 grid, unsigned threads, F f) {
    gridDim = grid; blockDim = {threads, 1, 1};
    for (unsigned z = 0; z < grid.z; ++z) for (unsigned y = 0; y < grid.y; ++y) for (unsigned x = 0; x < grid.x; ++x) {
        std::barrier<> block(threads); g_block = &block;
        g_warps.clear();
        for (unsigned w = 0; w < (threads + 31) / 32; ++w) { auto p = std::make_unique<Warp>(); p->bar = std::make_unique<std::barrier<>>(std::min(32u, threads - w * 32)); g_warps.push_back(std::move(p)); }
        std::vector<std::thread> ts;
        for (unsigned t = 0; t < threads; ++t) ts.emplace_back([=, &block] {
            threadIdx = {t, 0, 0}; blockIdx = {x, y, z}; f();
            block.arrive_and_drop(); g_warps[t / 32]->bar->arrive_and_drop();
        });
        for (auto& t : ts) t.join();
    }
}
