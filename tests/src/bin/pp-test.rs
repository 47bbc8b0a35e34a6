//! The poker-pipe command line with the test stage kinds registered, so the
//! end-to-end tests can run, kill and interrupt real processes.

fn main() -> std::process::ExitCode {
    poker_pipe::stages::install(poker_pipe_tests::kinds::registry());
    poker_pipe::cli::main()
}
