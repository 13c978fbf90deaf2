//! SIGINT and SIGTERM as a future, for `Broker::run` and the clients.

/// Completes on the first SIGINT or SIGTERM. From then on a second one ends
/// the process at once with 130, whatever the command is still doing (a
/// drain, a flush): an operator who asks twice means now.
///
/// The handlers are installed when this is called, not when the future is
/// first polled: a signal that comes in between (a broker that has said it
/// is ready and not yet started serving) is not lost, nor fatal.
pub fn signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tokio::spawn(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "aioq: a second signal: stopping now");
            std::process::exit(crate::exit::INTERRUPTED.into());
        });
    }
}
