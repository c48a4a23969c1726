//! Readiness for systemd (`Type=notify`): `READY=1` once the hub listens or the edge runs,
//! `RELOADING=1` … `READY=1` around a reload, `STOPPING=1` when asked to stop, each with a
//! `STATUS=` line. A datagram to `$NOTIFY_SOCKET` (a path, or `@name` for the abstract
//! namespace), as `sd_notify(3)` sends it; without the variable (not under systemd) it does
//! nothing. Children (ffmpeg) are started without the variable, so they cannot notify in our
//! name.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (lines of `KEY=value`) to systemd, if it is listening.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let result = (|| -> std::io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(state.as_bytes(), &addr)?;
            }
            None => {
                sock.send_to(state.as_bytes(), std::path::Path::new(&path))?;
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        tracing::debug!(error = %e, "cannot notify systemd");
    }
}
