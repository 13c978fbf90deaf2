//! The open-file limit: a broker holds one descriptor per connection, and the
//! usual soft limit (1024) is far below what the hard limit allows.

/// Raises the soft limit toward `want`, as far as the hard limit allows;
/// returns the soft limit now in force.
pub fn raise(want: u64) -> u64 {
    match rlimit::Resource::NOFILE.get() {
        Ok((soft, hard)) => {
            let target = want.min(hard).max(soft);
            if target > soft && rlimit::Resource::NOFILE.set(target, hard).is_ok() {
                return target;
            }
            soft
        }
        Err(_) => want,
    }
}
