//! SIGINT and SIGTERM as a future, for `Broker::run` and the clients.

/// Completes on the first SIGINT or SIGTERM. From then on a second one ends
/// the process at once with 130, whatever the command is still doing (a
/// drain, a flush): an operator who asks twice means now.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "aioq: a second signal: stopping now");
            std::process::exit(crate::exit::INTERRUPTED.into());
        });
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
