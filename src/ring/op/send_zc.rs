//! `IORING_OP_SENDMSG_ZC`: a vectored send without a copy where the route allows it.

use super::*;

/// The resources of a zero-copy vectored send.
pub struct ZcSendData {
    /// The descriptor.
    pub fd: SharedFd,
    /// The buffers: the kernel reads them until the notification completion.
    pub bufs: Vec<Bytes>,
    _iov: Vec<libc::iovec>,
    _msg: Box<libc::msghdr>,
}

/// `IORING_SEND_ZC_REPORT_USAGE`: the notification says whether the kernel had to copy after all.
const SEND_ZC_REPORT_USAGE: u16 = 8;
/// In a zero-copy notification's result: the data was copied.
pub const NOTIF_USAGE_ZC_COPIED: u32 = 1 << 31;

/// Zero-copy vectored send (`SENDMSG_ZC`). Completes twice: the send's result (with `F_MORE`), then
/// a notification (`F_NOTIF`) once the kernel no longer reads the buffers; only then may they be
/// reused, which the returned stream guarantees by owning them until its last completion.
pub fn sendmsg_zc(fd: SharedFd, bufs: Vec<Bytes>, skip: usize) -> OpStream<ZcSendData> {
    let iov = iovecs(&bufs, skip);
    // SAFETY: msghdr is a plain C struct; zero is valid.
    let mut msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
    msg.msg_iov = iov.as_ptr() as *mut _;
    msg.msg_iovlen = iov.len();
    let entry =
        opcode::SendMsgZc::new(fd_of(&fd), &*msg).ioprio(SEND_ZC_REPORT_USAGE).flags(libc::MSG_NOSIGNAL as u32).build();
    // SAFETY: the header, the iovec array and the buffers are owned by the op until its final
    // (notification) completion; none of their allocations moves.
    unsafe { OpStream::submit(entry, ZcSendData { fd, bufs, _iov: iov, _msg: msg }, None) }
}
