//! ringnode: a thread-per-core io_uring node runtime, and the tools built on it.
//!
//! The house, bottom to top (see `docs/ARCHITECTURE.md`):
//! - [`sys`]: thin wrappers over raw calls (affinity, limits, signalfd, shutdown, seccomp for tests);
//! - [`ring`]: one io_uring, the slab of in-flight operations, cancellation, the probe, and the
//!   operations (`ring/op/`, one file each); it knows nothing of cores;
//! - [`buf`]: buffer groups (a provided-buffer ring per use) and the `Bytes` that hand buffers back;
//! - [`runtime`]: a [`runtime::Core`] per pinned thread (ring, buffer groups, executor, timers,
//!   per-service state), typed mailboxes between cores, placement, shutdown;
//! - [`net`]: TCP and UDP on the ring, the send path (`OutQueue` + `Sender`), the `Transport` seam,
//!   connection deadlines;
//! - [`frame`]: the native wire format as a pure codec; [`session`]: what the frames mean, sans-IO;
//! - [`server`]: acceptor, placement, registry, limits, graceful stop, merged stats, admin endpoint;
//! - the services and tools: [`echo`], [`load`], [`info`];
//! - [`report`]: neutral pieces of reports (percentiles, interval logs, plots);
//! - [`cli`]: flags, exit codes and the terminal.
#![recursion_limit = "256"]
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
pub mod throughput;
