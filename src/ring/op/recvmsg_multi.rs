//! `IORING_OP_RECVMSG`, multishot, from a provided-buffer group: one completion per datagram,
//! each buffer laid out as the kernel's `io_uring_recvmsg_out` header, the sender's address, and
//! the datagram.

use super::*;

/// Room each buffer gives the sender's address: a `sockaddr_in6` (IPv4 addresses are smaller).
const NAME_LEN: u32 = std::mem::size_of::<libc::sockaddr_in6>() as u32;

/// The message header template of a multishot `RECVMSG`: only its name and control lengths are
/// read, and they lay out every buffer.
pub struct MsgTemplate {
    hdr: libc::msghdr,
}

fn template() -> MsgTemplate {
    // SAFETY: msghdr is a plain C struct; zero is valid.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_namelen = NAME_LEN;
    MsgTemplate { hdr }
}

/// Multishot receive of datagrams into buffers of group `bgid` (sized for the header, the address
/// and the largest datagram expected); `discard` gives a buffer back when nobody reads its
/// completion.
pub fn recvmsg_multi(fd: SharedFd, bgid: u16, discard: Discard) -> OpStream<(SharedFd, Box<MsgTemplate>)> {
    let msg = Box::new(template());
    let entry = opcode::RecvMsgMulti::new(fd_of(&fd), &msg.hdr, bgid).build();
    // SAFETY: the template lives in a Box owned by the op (the kernel reads it when the operation
    // is issued); buffers come from the registered group, which outlives the ring's use.
    unsafe { OpStream::submit(entry, (fd, msg), Some(discard)) }
}

/// One datagram in a buffer a multishot `RECVMSG` filled: the sender, where the datagram lies in
/// the buffer, and whether it was cut to fit. `None` for a buffer too short to hold the layout.
pub fn parse_datagram(buf: &[u8]) -> Option<(Option<SocketAddr>, std::ops::Range<usize>, bool)> {
    let t = template();
    let out = io_uring::types::RecvMsgOut::parse(buf, &t.hdr).ok()?;
    let name = out.name_data();
    // SAFETY: sockaddr_storage is plain data; zero is valid, and at most its size is copied in.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let n = name.len().min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: `n` bytes fit both the source slice and the storage.
    unsafe { std::ptr::copy_nonoverlapping(name.as_ptr(), (&mut storage as *mut libc::sockaddr_storage).cast(), n) };
    // SAFETY: the storage holds the address the kernel wrote (zero-padded), of length `n`.
    let peer = unsafe { SockAddr::new(storage, n as libc::socklen_t) }.as_socket();
    let start = out.payload_data().as_ptr() as usize - buf.as_ptr() as usize;
    Some((peer, start..start + out.payload_data().len(), out.is_payload_truncated()))
}
