//! The cost of entering and leaving the kernel on this machine: nanoseconds per `getppid`, the
//! cheapest system call, median of 5 runs of 2 million. perf/loadgen subtracts this, times the
//! system calls a ring saves, from a baseline's kernel time to state a ceiling.

fn main() {
    let mut per = Vec::new();
    for _ in 0..5 {
        let n = 2_000_000;
        let t = std::time::Instant::now();
        for _ in 0..n {
            // SAFETY: getppid takes no arguments and cannot fail.
            std::hint::black_box(unsafe { libc_getppid() });
        }
        per.push(t.elapsed().as_nanos() as f64 / n as f64);
    }
    per.sort_by(f64::total_cmp);
    println!("{{\"ns_per_syscall\": {}}}", per[2]);
}

extern "C" {
    #[link_name = "getppid"]
    fn libc_getppid() -> i32;
}
