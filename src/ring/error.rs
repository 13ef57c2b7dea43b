//! The one clear error a user gets when io_uring cannot be used here: what refused it, and how to
//! fix that.

use std::io;

/// Why a ring could not be created.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// io_uring is refused or missing on this host; `cause` and `fix` are sentences for a person.
    #[error("io_uring is unavailable: {cause}; fix: {fix}")]
    Unavailable {
        /// What refused it.
        cause: String,
        /// What the user can do.
        fix: String,
    },
    /// Any other setup failure.
    #[error("io_uring setup failed: {0}")]
    Io(#[from] io::Error),
}

fn read_sysctl(path: &str) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Turns the `errno` of a failed `io_uring_setup` into a cause and a fix, reading the
/// `kernel.io_uring_disabled` sysctl to tell a disabled io_uring from a seccomp filter.
pub fn classify_setup_error(e: &io::Error) -> RingError {
    classify_setup_error_with(e, read_sysctl("/proc/sys/kernel/io_uring_disabled"))
}

/// [`classify_setup_error`] with the sysctl's value given (`None`: not readable).
pub fn classify_setup_error_with(e: &io::Error, disabled: Option<i64>) -> RingError {
    let unavailable = |cause: &str, fix: &str| RingError::Unavailable { cause: cause.into(), fix: fix.into() };
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => match disabled {
            Some(2) => unavailable(
                "disabled by the sysctl kernel.io_uring_disabled=2",
                "run `sysctl -w kernel.io_uring_disabled=0` as root",
            ),
            Some(1) => unavailable(
                "kernel.io_uring_disabled=1 restricts it to the group in kernel.io_uring_group",
                "run as a member of that group, or `sysctl -w kernel.io_uring_disabled=0` as root",
            ),
            _ => unavailable(
                "io_uring_setup was refused with EPERM, most likely by a seccomp filter (container runtimes block it by default)",
                "allow the io_uring_setup, io_uring_enter and io_uring_register system calls in the seccomp profile (e.g. docker/podman --security-opt seccomp=<profile>)",
            ),
        },
        Some(libc::ENOSYS) => unavailable(
            "io_uring_setup does not exist (ENOSYS): the kernel was built without io_uring or a seccomp filter hides it",
            "use Linux 6.1 or newer built with CONFIG_IO_URING=y, and allow the io_uring system calls in any seccomp profile",
        ),
        Some(libc::ENOMEM) => unavailable(
            "the kernel could not allocate the ring's memory (ENOMEM), usually RLIMIT_MEMLOCK on kernels before 5.12",
            "raise the locked-memory limit (`ulimit -l`) or use a newer kernel",
        ),
        Some(libc::EINVAL) => unavailable(
            "the kernel rejected every io_uring setup this program tries (EINVAL): it is too old",
            "use Linux 6.1 or newer",
        ),
        _ => RingError::Io(io::Error::new(e.kind(), e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(errno: i32, disabled: Option<i64>) -> String {
        classify_setup_error_with(&io::Error::from_raw_os_error(errno), disabled).to_string()
    }

    #[test]
    fn each_refusal_names_its_cause_and_fix() {
        let t = text(libc::EPERM, Some(2));
        assert!(t.contains("kernel.io_uring_disabled=2") && t.contains("sysctl -w kernel.io_uring_disabled=0"), "{t}");
        let t = text(libc::EPERM, Some(1));
        assert!(t.contains("io_uring_group") && t.contains("fix:"), "{t}");
        let t = text(libc::EPERM, Some(0));
        assert!(t.contains("seccomp") && t.contains("fix:"), "{t}");
        assert!(text(libc::ENOSYS, None).contains("ENOSYS"));
        assert!(text(libc::EINVAL, None).contains("too old"));
        assert!(text(libc::ENOMEM, None).contains("ulimit -l"));
        for t in [text(libc::EPERM, Some(2)), text(libc::ENOSYS, None)] {
            assert!(!t.contains('\n'), "one line: {t}");
        }
    }
}
