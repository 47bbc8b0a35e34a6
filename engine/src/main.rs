//! The `poker-pipe` binary: parse the command line, run it, report, exit.

fn main() -> std::process::ExitCode {
    poker_pipe::cli::main()
}
