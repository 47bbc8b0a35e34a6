//! The stage kinds (one file each) and the registry the CLI hands the executor.
