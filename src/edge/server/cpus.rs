//! Which CPU each serving thread runs on.
//!
//! With one serving thread per CPU, the kernel's scheduler still moves them: on the 2-core
//! benchmark VM each ran on the other's CPU about one time in ten, and was preempted some
//! 5,000 times a second, and while a thread waits to run again its connections stall, for up
//! to a time slice (4 ms at `HZ=250`). Bound one per CPU, two serving threads never share a
//! core; everything else (clients, the upstream, the node's own background work) still goes
//! wherever the kernel puts it. At 10 KiB × 32 connections that took the node's p99 from
//! ≈ 4.2 ms to ≈ 1.3 ms, nginx's being 1.3–1.7 ms (docs/benchmarks.md).
//!
//! Binding is done only where it cannot crowd anything: one thread for each CPU of the
//! process's affinity mask, and no CPU quota (cgroup `cpu.max`) below that count — a container
//! limited to 2 CPUs of a 16-CPU host gets 2 threads that must not all land on CPUs 0 and 1,
//! which every other such container would pick too.

/// The CPUs the calling thread may run on, in ascending order (empty if they cannot be read).
pub(super) fn allowed() -> Vec<usize> {
    #[cfg(target_os = "linux")]
    {
        use rustix::thread::{CpuSet, sched_getaffinity};
        match sched_getaffinity(None) {
            Ok(set) => (0..CpuSet::MAX_CPU)
                .filter(|&cpu| set.is_set(cpu))
                .collect(),
            Err(err) => {
                tracing::debug!(error = %err, "could not read the CPU affinity mask");
                Vec::new()
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    Vec::new()
}

/// The CPU of each of `threads` serving threads, by index, or why they are left to the kernel.
/// `allowed`: the process's CPUs ([`allowed`]); `parallelism`: what the standard library says
/// the process may use, which counts a CPU quota.
pub(super) fn plan(
    threads: usize,
    allowed: &[usize],
    parallelism: usize,
) -> Result<Vec<usize>, &'static str> {
    if allowed.is_empty() {
        return Err("the process's CPU set could not be read");
    }
    if parallelism < allowed.len() {
        return Err("a CPU quota below the CPUs of the process's CPU set");
    }
    if threads < 2 {
        return Err("one serving thread");
    }
    if threads != allowed.len() {
        return Err("not one serving thread per CPU of the process's CPU set");
    }
    Ok(allowed.to_vec())
}

/// Lets the calling thread run wherever the process's main thread may (its CPU set as it is
/// now, not as it was at start-up: `taskset -a` or a changed cpuset may have moved it since).
pub(super) fn unbind() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use rustix::thread::{sched_getaffinity, sched_setaffinity};
        let main = rustix::process::getpid();
        let set = sched_getaffinity(Some(main)).map_err(std::io::Error::from)?;
        sched_setaffinity(None, &set).map_err(std::io::Error::from)
    }
    #[cfg(not(target_os = "linux"))]
    Ok(())
}

/// Lets the calling thread run on `cpus` only.
pub(super) fn bind(cpus: &[usize]) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use rustix::thread::{CpuSet, sched_setaffinity};
        let mut set = CpuSet::new();
        for &cpu in cpus {
            set.set(cpu);
        }
        sched_setaffinity(None, &set).map_err(std::io::Error::from)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = cpus;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_thread_per_cpu_of_the_set_is_bound_in_order() {
        assert_eq!(plan(2, &[0, 1], 2), Ok(vec![0, 1]));
        // A set given with taskset: the threads get its CPUs, not 0..n.
        assert_eq!(plan(3, &[2, 5, 7], 3), Ok(vec![2, 5, 7]));
    }

    #[test]
    fn anything_else_is_left_to_the_kernel() {
        assert_eq!(plan(1, &[0], 1), Err("one serving thread"));
        assert_eq!(plan(1, &[0, 1], 2), Err("one serving thread"));
        let count = Err("not one serving thread per CPU of the process's CPU set");
        assert_eq!(plan(3, &[0, 1], 2), count, "more threads than CPUs");
        assert_eq!(plan(2, &[0, 1, 2, 3], 4), count, "fewer threads than CPUs");
        // A quota is named as the reason even when the thread count follows it (the default:
        // one thread per CPU the quota allows), which is the common case in containers.
        let quota = Err("a CPU quota below the CPUs of the process's CPU set");
        assert_eq!(plan(2, &[0, 1], 1), quota);
        assert_eq!(plan(2, &[0, 1, 2, 3, 4, 5, 6, 7], 2), quota);
        assert_eq!(
            plan(2, &[], 2),
            Err("the process's CPU set could not be read")
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_calling_thread_can_be_bound_and_released() {
        let all = allowed();
        assert!(!all.is_empty(), "this thread runs on some CPU");
        let handle = std::thread::spawn(move || {
            bind(&all[..1]).unwrap();
            let bound = allowed();
            unbind().unwrap();
            (bound, allowed(), all)
        });
        let (bound, released, all) = handle.join().unwrap();
        assert_eq!(bound, all[..1]);
        assert_eq!(released, all);
        assert_eq!(allowed(), all, "another thread's binding is not this one's");
    }
}
