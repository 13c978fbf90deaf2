//! Running under systemd: readiness (`Type=notify`) and journald's own
//! timestamps. Both are a few bytes of protocol, written by hand: a
//! datagram of `KEY=VALUE` lines to `$NOTIFY_SOCKET`, and a look at
//! `$JOURNAL_STREAM`.

use std::os::unix::net::UnixDatagram;

/// Tells the service manager `state` (`READY=1`, `STOPPING=1`, ...) when it
/// asked to hear (`$NOTIFY_SOCKET`); does nothing otherwise. A failure is
/// logged, never fatal: the broker serves either way.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|socket| {
        let bytes = path.as_encoded_bytes();
        match bytes.strip_prefix(b"@") {
            // An abstract socket (Linux): `@` stands for the leading NUL.
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(state.as_bytes(), &addr)
            }
            None => socket.send_to(state.as_bytes(), &path),
        }
    });
    if let Err(e) = sent {
        tracing::warn!(
            "could not tell systemd {state} through NOTIFY_SOCKET {}: {e}",
            path.to_string_lossy()
        );
    }
}

/// Stderr is journald's stream (`$JOURNAL_STREAM` names its device and
/// inode): journald stamps each line, so a second timestamp is left out.
pub fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(journal) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream_is(&journal, meta.dev(), meta.ino())
}

/// `$JOURNAL_STREAM` (`DEVICE:INODE`, decimal) names this stream.
fn stream_is(journal: &str, dev: u64, ino: u64) -> bool {
    match journal.split_once(':') {
        Some((d, i)) => d.parse() == Ok(dev) && i.parse() == Ok(ino),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_is_compared_by_device_and_inode() {
        assert!(stream_is("8:123456", 8, 123456));
        assert!(!stream_is("8:123456", 8, 123457));
        assert!(!stream_is("9:123456", 8, 123456));
        assert!(!stream_is("garbage", 8, 123456));
        assert!(!stream_is("", 0, 0));
    }
}
