//! `IORING_OP_TIMEOUT`: a kernel timer (the runtime's timers are in user space; this one is for
//! measuring the ring itself).

use super::*;

/// Completes after `d` with `-ETIME` (or `-ECANCELED` if cancelled).
pub fn timeout(d: Duration) -> Op<Box<types::Timespec>> {
    let ts = Box::new(types::Timespec::new().sec(d.as_secs()).nsec(d.subsec_nanos()));
    let entry = opcode::Timeout::new(&*ts as *const types::Timespec).build();
    // SAFETY: the timespec lives in a Box owned by the op.
    unsafe { Op::submit(entry, ts) }
}
