//! The pipeline as a DAG: stage hashing, the cache store, the run lock and the
//! executor. Owns the Stage trait; never names a stage kind.
