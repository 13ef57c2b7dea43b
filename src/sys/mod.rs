//! Thin wrappers over raw Linux calls that no dependency covers well: CPU affinity, the open-file
//! limit, the kernel release, signal masks and signalfd, eventfd, process CPU time, and the seccomp
//! filter the tests use to simulate a host that refuses io_uring.
//!
//! This module knows nothing of rings, tasks or sockets; every `unsafe` block names its invariant.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// The CPUs this process may run on (`sched_getaffinity`), in ascending order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: we pass the size of `set` and a valid pointer to it.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        return (0..n).collect();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the capacity of `set`.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Pins the calling thread to one CPU.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET bounds-checks nothing, so we check `cpu` against the set's capacity first.
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: `cpu` < CPU_SETSIZE (checked above).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; size and pointer describe `set`.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The soft and hard `RLIMIT_NOFILE`.
pub fn nofile_limit() -> (u64, u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid out-pointer for getrlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return (1024, 1024);
    }
    (lim.rlim_cur, lim.rlim_max)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    let (soft, hard) = nofile_limit();
    if soft >= hard {
        return soft;
    }
    let lim = libc::rlimit { rlim_cur: hard as libc::rlim_t, rlim_max: hard as libc::rlim_t };
    // SAFETY: `lim` is a valid rlimit; raising the soft limit up to the hard one needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
        hard
    } else {
        soft
    }
}

/// The kernel release string (`uname -r`).
pub fn kernel_release() -> String {
    // SAFETY: utsname is plain data; zeroed is valid.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid out-pointer for uname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return "unknown".into();
    }
    let bytes: Vec<u8> = uts.release.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Parses the leading `major.minor` of a kernel release such as `6.18.44-fc`.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// A signal set holding SIGINT and SIGTERM.
fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data and sigemptyset initialises it before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
    }
    set
}

/// Blocks SIGINT and SIGTERM in the calling thread (and every thread it spawns afterwards), so that
/// they are only ever delivered through a signalfd.
pub fn block_stop_signals() {
    let set = stop_signals();
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// A signalfd that reports SIGINT and SIGTERM. Call [`block_stop_signals`] first. It is left
/// blocking on purpose: io_uring answers a read on a non-blocking descriptor with `EAGAIN` at once
/// instead of waiting for it to become readable.
pub fn stop_signalfd() -> io::Result<OwnedFd> {
    let set = stop_signals();
    // SAFETY: -1 asks for a new fd; `set` is initialised.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: signalfd returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Size of one `signalfd_siginfo` record.
pub const SIGINFO_SIZE: usize = std::mem::size_of::<libc::signalfd_siginfo>();

/// An eventfd, used to wake a ring from a thread that has no ring of its own. Blocking, for the
/// same reason as [`stop_signalfd`]; writes to it never block in practice (the counter would have
/// to reach 2^64 - 2).
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with valid flags.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: eventfd returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd counter. Never blocks; a saturated counter already means "wake".
pub fn eventfd_signal(fd: std::os::fd::RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to a descriptor the caller keeps open.
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

/// User and system CPU time of the calling thread, in seconds.
pub fn thread_cpu_seconds() -> f64 {
    // SAFETY: rusage is plain data; zeroed is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid out-pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// User and system CPU time of the whole process, in seconds.
pub fn process_cpu_seconds() -> f64 {
    // SAFETY: rusage is plain data; zeroed is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid out-pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// User and system CPU time of the calling thread, in seconds, apart.
pub fn thread_cpu_split() -> (f64, f64) {
    // SAFETY: rusage is plain data; zeroed is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid out-pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return (0.0, 0.0);
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

/// What `TCP_INFO` tells of a connection (the fields a throughput report shows).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpInfo {
    /// Segments retransmitted over the connection's life.
    pub total_retrans: u32,
    /// Congestion window, bytes (segments times the send MSS).
    pub snd_cwnd_bytes: u64,
    /// The peer's advertised window, bytes (0 where the kernel does not say).
    pub snd_wnd: u32,
    /// Smoothed round-trip time and its variance, microseconds.
    pub rtt_us: u32,
    /// Round-trip time variance, microseconds.
    pub rttvar_us: u32,
    /// Path MTU.
    pub pmtu: u32,
}

/// `TCP_INFO` of a TCP socket. Read as bytes at the kernel's fixed offsets (`struct tcp_info` of
/// `linux/tcp.h`), so that fields newer than the C library's copy of the struct are readable.
pub fn tcp_info(fd: std::os::fd::RawFd) -> Option<TcpInfo> {
    let mut buf = [0u8; 256];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `buf`, which is that long, and stores the
    // length written in `len`.
    let r = unsafe { libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, buf.as_mut_ptr().cast(), &mut len) };
    if r != 0 || (len as usize) < 104 {
        return None;
    }
    let u32_at = |off: usize| u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4 bytes"));
    Some(TcpInfo {
        total_retrans: u32_at(100),
        snd_cwnd_bytes: u64::from(u32_at(80)) * u64::from(u32_at(16)),
        snd_wnd: if len as usize >= 232 { u32_at(228) } else { 0 },
        rtt_us: u32_at(68),
        rttvar_us: u32_at(72),
        pmtu: u32_at(60),
    })
}

/// Sets an integer socket option (for options `socket2` does not name: `UDP_SEGMENT`, `UDP_GRO`).
pub fn set_int_option(fd: std::os::fd::RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: setsockopt reads `size_of::<i32>()` bytes from a live i32.
    let r = unsafe {
        libc::setsockopt(fd, level, name, (&value as *const i32).cast(), std::mem::size_of::<i32>() as libc::socklen_t)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Aborts a TCP connection now: `SO_LINGER` of zero and a disconnect (`connect` to `AF_UNSPEC`),
/// so the kernel drops what is queued to send (and lets go of zero-copy buffers it still held for
/// it), sends a reset, and every operation waiting on the socket completes. The descriptor stays
/// open for its owner to close.
pub fn abort_tcp(fd: &impl std::os::fd::AsRawFd) {
    let fd = fd.as_raw_fd();
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt reads `size_of::<linger>()` bytes from a live `linger`.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    // SAFETY: sockaddr is plain data; an AF_UNSPEC address of that size asks for a disconnect.
    let mut addr: libc::sockaddr = unsafe { std::mem::zeroed() };
    addr.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    // SAFETY: `addr` is a live sockaddr of the length passed.
    unsafe { libc::connect(fd, &addr, std::mem::size_of::<libc::sockaddr>() as libc::socklen_t) };
}

/// `shutdown(2)` on a descriptor its caller keeps open (errors ignored: the socket may already be
/// disconnected).
pub fn shutdown_socket(fd: std::os::fd::RawFd, how: std::net::Shutdown) {
    let how = match how {
        std::net::Shutdown::Read => libc::SHUT_RD,
        std::net::Shutdown::Write => libc::SHUT_WR,
        std::net::Shutdown::Both => libc::SHUT_RDWR,
    };
    // SAFETY: shutdown takes no pointers; a stale descriptor number only gets an error back, and
    // callers keep the descriptor open while they may call this.
    unsafe { libc::shutdown(fd, how) };
}

/// Installs a seccomp filter on the calling thread that makes `io_uring_setup` fail with `errno`.
///
/// It exists so that tests can show what a user behind a container's seccomp profile sees: call it
/// from `Command::pre_exec` and the child starts as if the host refused io_uring.
pub fn deny_io_uring_setup(errno: i32) -> io::Result<()> {
    deny_syscall(libc::SYS_io_uring_setup as u32, errno)
}

/// Installs a seccomp filter on the calling thread that makes `io_uring_enter` fail with `errno`:
/// rings can be created, but never entered (tests of a ring that fails under a running core).
pub fn deny_io_uring_enter(errno: i32) -> io::Result<()> {
    deny_syscall(libc::SYS_io_uring_enter as u32, errno)
}

fn deny_syscall(nr: u32, errno: i32) -> io::Result<()> {
    let ret_errno = libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA);
    let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let filter = [
        // Load the syscall number (offset 0 of struct seccomp_data).
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        libc::sock_filter { code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16, jt: 0, jf: 1, k: nr },
        stmt(libc::BPF_RET | libc::BPF_K, ret_errno),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr() as *mut _ };
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `prog` points at `filter`, which lives until the call returns; the kernel copies it.
    if unsafe { libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const _) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_version_parses_release_strings() {
        assert_eq!(kernel_version("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(kernel_version("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(kernel_version("garbage"), None);
    }

    #[test]
    fn allowed_cpus_is_not_empty() {
        assert!(!allowed_cpus().is_empty());
    }
}
