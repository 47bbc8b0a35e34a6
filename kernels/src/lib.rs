//! The CUDA C sources of poker-pipe's kernels, embedded in the binary so NVRTC
//! can compile them at first use for whatever GPU the run finds.
