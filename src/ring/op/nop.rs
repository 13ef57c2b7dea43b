//! `IORING_OP_NOP`: the cheapest round trip through the ring.

use super::*;

/// A no-op: the cheapest round trip through the ring.
pub fn nop() -> Op<()> {
    // SAFETY: a NOP carries no pointers.
    unsafe { Op::submit(opcode::Nop::new().build(), ()) }
}
