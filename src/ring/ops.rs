//! The catalogue of operations the runtime uses, each a safe constructor that builds the entry and
//! moves what the kernel will read or write into the returned [`Op`], so that memory stays put and
//! alive until the completion (see the module docs of `ring` for what happens on drop).

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use io_uring::{opcode, types};
use socket2::SockAddr;

use super::op::{Op, OpStream};
use super::Discard;

/// A descriptor shared by a socket and its in-flight operations: it is closed only when the last
/// of them is gone, so its number cannot be reused under an operation the kernel still holds.
pub type SharedFd = Rc<OwnedFd>;

/// Memory the kernel reads from in a send.
///
/// # Safety
/// The kernel reads `bytes_len()` bytes at `stable_ptr()` after the value has been moved into the
/// operation, and until the operation's final completion. An implementation must therefore
/// guarantee that:
/// - `stable_ptr()` points to `bytes_len()` initialised bytes in memory that the value owns or
///   borrows for `'static` — a heap allocation or static memory, never the value itself (a pointer
///   into an inline array would dangle once the value moves into the operation);
/// - moving the value does not move or free that memory, and neither does anything else while
///   the value is alive (no interior mutability that reallocates it);
/// - both methods return the same answer every time they are called on the same value.
///
/// Implementing it for a type that keeps its bytes inline is exactly the mistake this contract
/// exists to prevent, which is why the trait is `unsafe`:
///
/// ```compile_fail
/// struct Inline([u8; 16]);
/// // error[E0200]: the trait `IoBuf` requires an `unsafe impl` declaration
/// impl ringnode::ring::ops::IoBuf for Inline {
///     fn stable_ptr(&self) -> *const u8 { self.0.as_ptr() }
///     fn bytes_len(&self) -> usize { 16 }
/// }
/// ```
pub unsafe trait IoBuf: 'static {
    /// Start of the bytes.
    fn stable_ptr(&self) -> *const u8;
    /// Number of bytes.
    fn bytes_len(&self) -> usize;
}

// SAFETY: a Vec's bytes live in its heap allocation, which moving the Vec does not move.
unsafe impl IoBuf for Vec<u8> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.len()
    }
}

// SAFETY: a Bytes points into shared (heap or static) memory that it keeps alive and that no
// one mutates while it exists.
unsafe impl IoBuf for Bytes {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.len()
    }
}

// SAFETY: the slice lives in the Rc's heap allocation, kept alive by this reference.
unsafe impl IoBuf for Rc<[u8]> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.len()
    }
}

// SAFETY: static memory never moves or goes away.
unsafe impl IoBuf for &'static [u8] {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.len()
    }
}

fn fd_of(fd: &SharedFd) -> types::Fd {
    types::Fd(fd.as_raw_fd())
}

/// A no-op: the cheapest round trip through the ring.
pub fn nop() -> Op<()> {
    // SAFETY: a NOP carries no pointers.
    unsafe { Op::submit(opcode::Nop::new().build(), ()) }
}

/// Completes after `d` with `-ETIME` (or `-ECANCELED` if cancelled).
pub fn timeout(d: Duration) -> Op<Box<types::Timespec>> {
    let ts = Box::new(types::Timespec::new().sec(d.as_secs()).nsec(d.subsec_nanos()));
    let entry = opcode::Timeout::new(&*ts as *const types::Timespec).build();
    // SAFETY: the timespec lives in a Box owned by the op.
    unsafe { Op::submit(entry, ts) }
}

/// Multishot accept: one completion per accepted connection (its descriptor as the result).
/// Accepted descriptors nobody reads (the stream was dropped) are closed.
pub fn accept_multi(fd: SharedFd) -> OpStream<SharedFd> {
    let entry = opcode::AcceptMulti::new(fd_of(&fd)).flags(libc::SOCK_CLOEXEC).build();
    // SAFETY: no pointers; the op keeps the listener's descriptor open.
    unsafe { OpStream::submit(entry, fd, Some(close_unread_fd)) }
}

/// Closes the descriptor an accept completion made, which nobody will read.
fn close_unread_fd(c: &super::Completion) {
    if c.result() >= 0 {
        drop(adopt_fd(c.result()));
    }
}

/// Takes ownership of a descriptor the kernel returned in a completion (accept). Crate-private:
/// turning any integer into an `OwnedFd` would let safe code close descriptors it does not own.
///
/// # Panics
/// If `raw` is negative (an error, not a descriptor).
pub(crate) fn adopt_fd(raw: i32) -> OwnedFd {
    assert!(raw >= 0, "adopt_fd on an error result");
    // SAFETY: a non-negative accept result is a new descriptor that nothing else owns.
    unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) }
}

/// Connects `fd` to `addr`.
pub fn connect(fd: SharedFd, addr: SocketAddr) -> Op<(SharedFd, Box<SockAddr>)> {
    let addr = Box::new(SockAddr::from(addr));
    let entry = opcode::Connect::new(fd_of(&fd), addr.as_ptr().cast(), addr.len()).build();
    // SAFETY: the address lives in a Box owned by the op.
    unsafe { Op::submit(entry, (fd, addr)) }
}

/// `IORING_RECVSEND_POLL_FIRST`: wait for readiness before trying the receive.
const RECVSEND_POLL_FIRST: u16 = 1;

/// Receives into the spare capacity of `buf` (after its length). On completion the caller adds
/// the result to the length (`TcpStream::recv` does).
///
/// `poll_first` skips the kernel's first, non-blocking attempt: right for a receive that most
/// likely finds the socket empty (the previous one drained it), where that attempt is wasted work.
pub fn recv(fd: SharedFd, mut buf: Vec<u8>, poll_first: bool) -> Op<(SharedFd, Vec<u8>)> {
    let spare = buf.spare_capacity_mut();
    let (ptr, len) = (spare.as_mut_ptr().cast::<u8>(), spare.len().min(u32::MAX as usize) as u32);
    let ioprio = if poll_first { RECVSEND_POLL_FIRST } else { 0 };
    let entry = opcode::Recv::new(fd_of(&fd), ptr, len).ioprio(ioprio).build();
    // SAFETY: the pointer is into the Vec's heap allocation, owned by the op; moving the Vec does
    // not move its allocation.
    unsafe { Op::submit(entry, (fd, buf)) }
}

/// Multishot receive into buffers of group `bgid`: one completion per chunk of data (its buffer id
/// in the flags), until end of stream, an error, or the group running dry (`ENOBUFS`). `discard`
/// gives a completion's buffer back to the group when nobody reads it.
pub fn recv_multi(fd: SharedFd, bgid: u16, discard: Discard) -> OpStream<SharedFd> {
    let entry = opcode::RecvMulti::new(fd_of(&fd), bgid).build();
    // SAFETY: no pointers; buffers come from the registered group, which outlives the ring's use.
    unsafe { OpStream::submit(entry, fd, Some(discard)) }
}

/// Marks `n` more bytes of `buf` as initialised after a receive into its spare capacity.
/// Crate-private: only the count of a completion of a receive into that very buffer may be
/// passed, and safe code outside could pass any number.
///
/// # Panics
/// If `n` exceeds the spare capacity (the kernel never reports more than it was given).
pub(crate) fn received(buf: &mut Vec<u8>, n: usize) {
    assert!(buf.len() + n <= buf.capacity());
    // SAFETY: the kernel initialised `n` bytes right after the old length (checked in bounds).
    unsafe { buf.set_len(buf.len() + n) };
}

/// Sends `buf[offset..]`.
pub fn send<B: IoBuf>(fd: SharedFd, buf: B, offset: usize) -> Op<(SharedFd, B)> {
    let offset = offset.min(buf.bytes_len());
    let len = (buf.bytes_len() - offset).min(u32::MAX as usize) as u32;
    // SAFETY (pointer arithmetic): offset <= len of the allocation.
    let ptr = unsafe { buf.stable_ptr().add(offset) };
    let entry = opcode::Send::new(fd_of(&fd), ptr, len).flags(libc::MSG_NOSIGNAL).build();
    // SAFETY: the pointer is into `buf`'s stable memory, owned by the op.
    unsafe { Op::submit(entry, (fd, buf)) }
}

/// The resources of a vectored send.
pub struct WritevData {
    /// The descriptor.
    pub fd: SharedFd,
    /// The buffers, in order.
    pub bufs: Vec<Bytes>,
    // Read by the kernel through the entry, never by us: kept alive here until completion.
    _iov: Vec<libc::iovec>,
}

/// The iovecs of `bufs` without their first `skip` bytes, at most `UIO_MAXIOV` of them.
fn iovecs(bufs: &[Bytes], mut skip: usize) -> Vec<libc::iovec> {
    let mut iov = Vec::with_capacity(bufs.len().min(libc::UIO_MAXIOV as usize));
    for b in bufs {
        if skip >= b.len() {
            skip -= b.len();
            continue;
        }
        iov.push(libc::iovec { iov_base: b[skip..].as_ptr() as *mut _, iov_len: b.len() - skip });
        skip = 0;
        if iov.len() == libc::UIO_MAXIOV as usize {
            break;
        }
    }
    iov
}

/// Sends `bufs` in order with one `writev`. The first `skip` bytes are left out (for resuming after
/// a short write).
pub fn writev(fd: SharedFd, bufs: Vec<Bytes>, skip: usize) -> Op<WritevData> {
    let iov = iovecs(&bufs, skip);
    let entry = opcode::Writev::new(fd_of(&fd), iov.as_ptr(), iov.len() as u32).build();
    // SAFETY: the iovec array and every buffer it points into are owned by the op; neither the
    // Vec's allocation nor the Bytes' memory moves.
    unsafe { Op::submit(entry, WritevData { fd, bufs, _iov: iov }) }
}

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

/// Memory registered with the ring as a fixed buffer.
///
/// # Safety
/// `base()..base() + len()` must be memory registered with this thread's ring as fixed buffer
/// `index()`, valid (and not moved) for as long as the value lives; the three methods return the
/// same answer every time. The kernel reads that range after the value moved into the operation.
///
/// ```compile_fail
/// struct Fake;
/// // error[E0200]: the trait `FixedBuf` requires an `unsafe impl` declaration
/// impl ringnode::ring::ops::FixedBuf for Fake {
///     fn base(&self) -> *const u8 { std::ptr::null() }
///     fn len(&self) -> usize { 1 << 20 }
///     fn index(&self) -> u16 { 0 }
/// }
/// ```
pub unsafe trait FixedBuf: 'static {
    /// Start of the registered memory.
    fn base(&self) -> *const u8;
    /// Its length.
    fn len(&self) -> usize;
    /// Whether it is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Its index among the ring's fixed buffers.
    fn index(&self) -> u16;
}

/// Writes `buf[offset..offset + len]` (a registered buffer: the kernel skips pinning its pages for
/// every operation) to `fd`.
///
/// # Panics
/// If the range is outside the buffer.
pub fn write_fixed<B: FixedBuf>(fd: SharedFd, buf: Rc<B>, offset: usize, len: usize) -> Op<(SharedFd, Rc<B>)> {
    assert!(offset.checked_add(len).is_some_and(|end| end <= buf.len()), "range outside the fixed buffer");
    // SAFETY (pointer arithmetic): the range is inside the buffer (checked above).
    let ptr = unsafe { buf.base().add(offset) };
    let entry = opcode::WriteFixed::new(fd_of(&fd), ptr, len as u32, buf.index()).offset(u64::MAX).build();
    // SAFETY: the registered memory is owned by `buf`, which the op keeps alive.
    unsafe { Op::submit(entry, (fd, buf)) }
}

/// Shuts down one or both directions (`libc::SHUT_WR`, …).
pub fn shutdown(fd: SharedFd, how: i32) -> Op<SharedFd> {
    let entry = opcode::Shutdown::new(fd_of(&fd), how).build();
    // SAFETY: no pointers.
    unsafe { Op::submit(entry, fd) }
}

/// Closes `fd` on the ring.
pub fn close(fd: OwnedFd) -> Op<()> {
    let entry = opcode::Close::new(types::Fd(fd.into_raw_fd())).build();
    // SAFETY: no pointers; the descriptor's ownership passed to the kernel.
    unsafe { Op::submit(entry, ()) }
}

/// Reads into the spare capacity of `buf` (eventfd, signalfd).
pub fn read(fd: SharedFd, mut buf: Vec<u8>) -> Op<(SharedFd, Vec<u8>)> {
    let spare = buf.spare_capacity_mut();
    let (ptr, len) = (spare.as_mut_ptr().cast::<u8>(), spare.len().min(u32::MAX as usize) as u32);
    let entry = opcode::Read::new(fd_of(&fd), ptr, len).offset(u64::MAX).build();
    // SAFETY: as for `recv`.
    unsafe { Op::submit(entry, (fd, buf)) }
}

/// The message header of a datagram operation with the storage it points into.
pub struct MsgStore {
    hdr: libc::msghdr,
    iov: libc::iovec,
    addr: libc::sockaddr_storage,
}

impl MsgStore {
    fn new() -> Box<MsgStore> {
        // SAFETY: all three are plain C structs for which zero is a valid value.
        Box::new(unsafe { std::mem::zeroed() })
    }

    /// The peer address the kernel wrote (after a `recvmsg`).
    pub fn peer(&self) -> Option<SocketAddr> {
        // SAFETY: the storage is initialised (zeroed, then written by the kernel) and the length
        // is what the kernel reported, bounded by the storage size.
        let addr = unsafe { SockAddr::new(self.addr, self.hdr.msg_namelen) };
        addr.as_socket()
    }
}

/// The resources of a datagram operation.
pub struct DatagramData {
    /// The descriptor.
    pub fd: SharedFd,
    /// The payload buffer.
    pub buf: Vec<u8>,
    /// The header (and, after a receive, the sender's address).
    pub msg: Box<MsgStore>,
}

/// Receives one datagram into the spare capacity of `buf`, with its sender's address.
pub fn recvmsg(fd: SharedFd, mut buf: Vec<u8>) -> Op<DatagramData> {
    let mut msg = MsgStore::new();
    let spare = buf.spare_capacity_mut();
    msg.iov = libc::iovec { iov_base: spare.as_mut_ptr().cast(), iov_len: spare.len() };
    msg.hdr.msg_name = (&mut msg.addr as *mut libc::sockaddr_storage).cast();
    msg.hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
    msg.hdr.msg_iov = &mut msg.iov;
    msg.hdr.msg_iovlen = 1;
    let entry = opcode::RecvMsg::new(fd_of(&fd), &mut msg.hdr).build();
    // SAFETY: the header points into its own Box and into the Vec's allocation, both owned by the
    // op and neither moved by moving the op.
    unsafe { Op::submit(entry, DatagramData { fd, buf, msg }) }
}

/// Sends `buf` as one datagram to `addr`.
pub fn sendmsg(fd: SharedFd, buf: Vec<u8>, addr: SocketAddr) -> Op<DatagramData> {
    let mut msg = MsgStore::new();
    let sa = SockAddr::from(addr);
    // SAFETY: `sa.len()` bytes fit in sockaddr_storage, which is the largest socket address.
    unsafe {
        std::ptr::copy_nonoverlapping(
            sa.as_ptr().cast::<u8>(),
            (&mut msg.addr as *mut libc::sockaddr_storage).cast::<u8>(),
            sa.len() as usize,
        )
    };
    msg.iov = libc::iovec { iov_base: buf.as_ptr() as *mut _, iov_len: buf.len() };
    msg.hdr.msg_name = (&mut msg.addr as *mut libc::sockaddr_storage).cast();
    msg.hdr.msg_namelen = sa.len();
    msg.hdr.msg_iov = &mut msg.iov;
    msg.hdr.msg_iovlen = 1;
    let entry = opcode::SendMsg::new(fd_of(&fd), &msg.hdr).flags(libc::MSG_NOSIGNAL as u32).build();
    // SAFETY: as for `recvmsg`.
    unsafe { Op::submit(entry, DatagramData { fd, buf, msg }) }
}
