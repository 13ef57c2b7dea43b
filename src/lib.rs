//! ringnode: a thread-per-core io_uring node runtime, and the tools built on it.
//!
//! The house, bottom to top (see `docs/ARCHITECTURE.md`):
//! - [`sys`]: thin wrappers over raw calls (affinity, limits, signalfd, seccomp for tests);
//! - [`buf`]: per-core provided-buffer pools and the `Bytes` that hand buffers back;
//! - [`ring`]: one io_uring per thread, the slab of in-flight operations, cancellation, the probe;
//! - [`frame`]: the native wire format as a sans-IO codec;
//! - [`runtime`]: pinned threads, local executors, timers, cross-core mailboxes, shutdown;
//! - [`net`]: TCP and UDP sockets on the ring;
//! - [`load`]: the load generator;
//! - [`report`]: what a person (or a machine) reads;
//! - [`cli`]: the command-line tools.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod buf;
pub mod cli;
pub mod echo;
pub mod frame;
pub mod info;
pub mod load;
pub mod net;
pub mod report;
pub mod ring;
pub mod runtime;
pub mod server;
pub mod session;
pub mod sys;
