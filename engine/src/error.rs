//! How a command ends: an exit code from a fixed table, and for failures a
//! miette report that says what is wrong, where, and what to do.

use std::process::ExitCode;

/// Process exit codes. Scripts and CI depend on these; never renumber them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Everything asked for was done.
    Ok,
    /// The user's input is wrong: an invalid spec, bad data, a bad card.
    User,
    /// The command line itself is wrong (clap's own code).
    Usage,
    /// The input was fine but the work failed: out of memory, NaN, I/O.
    Runtime,
    /// Stopped by Ctrl-C after saving resumable state.
    Interrupted,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::User => 1,
            Exit::Usage => 2,
            Exit::Runtime => 3,
            Exit::Interrupted => 130,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

/// A failed command: the report to print and the code to exit with.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub report: miette::Report,
}

impl Failure {
    /// The user's input is at fault (exit 1).
    pub fn user(report: impl Into<miette::Report>) -> Self {
        Failure {
            exit: Exit::User,
            report: report.into(),
        }
    }

    /// The work failed on valid input (exit 3).
    pub fn runtime(report: impl Into<miette::Report>) -> Self {
        Failure {
            exit: Exit::Runtime,
            report: report.into(),
        }
    }

    /// Stopped on request after saving state (exit 130).
    pub fn interrupted(report: impl Into<miette::Report>) -> Self {
        Failure {
            exit: Exit::Interrupted,
            report: report.into(),
        }
    }
}

/// What every subcommand returns.
pub type CmdResult = Result<Exit, Failure>;
