//! The command-line tools: `clap` flags translated into library calls, the exit codes, and the
//! terminal (what the tools print is built by the library: `load::summary`, `EchoStats::text`,
//! `info`).
//!
//! Exit codes: 0 success, 1 runtime failure (a port in use, a run that failed), 2 usage error (a bad
//! flag, address or value), 3 io_uring unavailable, 4 a threshold of `load --slo` crossed (with
//! `--find-max-rate`: no rate tried met them).

mod args;
mod commands;
pub mod perf;

pub use args::{
    parse_cpu_list, parse_duration, parse_size, parse_size_range, Cli, Command, CpuArgs, CpuList, LoadArgs, LoadMode,
    LogFormat,
};

mod log;
pub use commands::run;
pub use log::init_logging;

/// A failure with the exit code it maps to and one line for a person.
#[derive(Debug)]
pub struct Failure {
    /// Process exit code.
    pub code: i32,
    /// The line to print (without the `ringnode: ` prefix).
    pub message: String,
}

impl Failure {
    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure { code: 2, message: message.into() }
    }

    /// A threshold of `load --slo` crossed (exit 4).
    pub fn slo(message: impl Into<String>) -> Failure {
        Failure { code: 4, message: message.into() }
    }

    /// A runtime error (exit 1).
    pub fn runtime(message: impl Into<String>) -> Failure {
        Failure { code: 1, message: message.into() }
    }
}

impl From<crate::ring::RingError> for Failure {
    fn from(e: crate::ring::RingError) -> Failure {
        match e {
            crate::ring::RingError::Unavailable { .. } => Failure { code: 3, message: e.to_string() },
            crate::ring::RingError::Io(_) => Failure::runtime(e.to_string()),
        }
    }
}

impl From<crate::runtime::RuntimeError> for Failure {
    fn from(e: crate::runtime::RuntimeError) -> Failure {
        match e {
            crate::runtime::RuntimeError::Ring(r) => r.into(),
            other => Failure::runtime(other.to_string()),
        }
    }
}

impl From<crate::echo::ServeError> for Failure {
    fn from(e: crate::echo::ServeError) -> Failure {
        match e {
            crate::echo::ServeError::Runtime(r) => r.into(),
            crate::echo::ServeError::Net(n) => Failure::runtime(n.to_string()),
            crate::echo::ServeError::Accept(a) => Failure::runtime(a.to_string()),
        }
    }
}
