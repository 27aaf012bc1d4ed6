//! Transport addresses and one listener/connector abstraction over vsock, Unix and TCP sockets.
//!
//! Handlers see only a [`Stream`], so the code that runs over vsock inside a Nitro enclave is
//! exactly the code the tests run over Unix sockets.

use std::path::PathBuf;
use std::str::FromStr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_vsock::{VsockAddr, VsockListener, VsockStream};

use crate::{ProtocolError, Result};

/// A byte stream any transport can provide.
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncStream for T {}

/// A connected byte stream, whatever carries it.
pub type Stream = Box<dyn AsyncStream>;

/// Where to listen or connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// `vsock://CID:PORT`: an AF_VSOCK socket (Nitro enclave ↔ parent instance).
    Vsock {
        /// Context id (the enclave's CID, or 3 for the parent).
        cid: u32,
        /// Port.
        port: u32,
    },
    /// `unix:///absolute/path`: a Unix domain socket.
    Unix(PathBuf),
    /// `tcp://HOST:PORT`: TCP, meant for loopback only.
    Tcp(std::net::SocketAddr),
}

impl FromStr for Address {
    type Err = ProtocolError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || ProtocolError::BadAddress(s.to_string());
        if let Some(rest) = s.strip_prefix("vsock://") {
            let (cid, port) = rest.split_once(':').ok_or_else(bad)?;
            Ok(Address::Vsock {
                cid: cid.parse().map_err(|_| bad())?,
                port: port.parse().map_err(|_| bad())?,
            })
        } else if let Some(path) = s.strip_prefix("unix://") {
            if !path.starts_with('/') || path.len() < 2 {
                return Err(bad());
            }
            Ok(Address::Unix(PathBuf::from(path)))
        } else if let Some(rest) = s.strip_prefix("tcp://") {
            Ok(Address::Tcp(rest.parse().map_err(|_| bad())?))
        } else {
            Err(bad())
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Vsock { cid, port } => write!(f, "vsock://{cid}:{port}"),
            Address::Unix(p) => write!(f, "unix://{}", p.display()),
            Address::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// A bound listener on any transport.
#[derive(Debug)]
pub enum Listener {
    /// A vsock listener.
    Vsock(VsockListener),
    /// A Unix socket listener; the socket file is removed on drop.
    Unix(UnixListener, PathBuf),
    /// A TCP listener.
    Tcp(TcpListener),
}

impl Listener {
    /// Binds `addr`. A stale Unix socket file (nobody answering) is replaced; a live one is
    /// an `AddrInUse` error, so two processes never silently share a path.
    pub async fn bind(addr: &Address) -> Result<Self> {
        match addr {
            Address::Vsock { cid, port } => Ok(Listener::Vsock(VsockListener::bind(
                VsockAddr::new(*cid, *port),
            )?)),
            Address::Unix(path) => {
                if path.exists() {
                    if UnixStream::connect(path).await.is_ok() {
                        return Err(ProtocolError::Io(std::io::Error::new(
                            std::io::ErrorKind::AddrInUse,
                            format!("{} is already served by another process", path.display()),
                        )));
                    }
                    std::fs::remove_file(path)?;
                }
                let listener = UnixListener::bind(path)?;
                // Only this user may talk to the enclave or proxy sockets.
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
                Ok(Listener::Unix(listener, path.clone()))
            }
            Address::Tcp(sa) => Ok(Listener::Tcp(TcpListener::bind(sa).await?)),
        }
    }

    /// Waits for the next connection.
    pub async fn accept(&self) -> Result<Stream> {
        Ok(match self {
            Listener::Vsock(l) => Box::new(l.accept().await?.0),
            Listener::Unix(l, _) => Box::new(l.accept().await?.0),
            Listener::Tcp(l) => {
                let (s, _) = l.accept().await?;
                s.set_nodelay(true)?;
                Box::new(s)
            }
        })
    }

    /// The address actually bound (useful with TCP port 0).
    pub fn local_address(&self) -> Result<Address> {
        Ok(match self {
            Listener::Vsock(l) => {
                let a = l.local_addr()?;
                Address::Vsock {
                    cid: a.cid(),
                    port: a.port(),
                }
            }
            Listener::Unix(_, p) => Address::Unix(p.clone()),
            Listener::Tcp(l) => Address::Tcp(l.local_addr()?),
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Connects to `addr`.
pub async fn connect(addr: &Address) -> Result<Stream> {
    Ok(match addr {
        Address::Vsock { cid, port } => {
            Box::new(VsockStream::connect(VsockAddr::new(*cid, *port)).await?)
        }
        Address::Unix(path) => Box::new(UnixStream::connect(path).await?),
        Address::Tcp(sa) => {
            let s = TcpStream::connect(sa).await?;
            s.set_nodelay(true)?;
            Box::new(s)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_print() {
        for s in [
            "vsock://16:5000",
            "unix:///tmp/e.sock",
            "tcp://127.0.0.1:9000",
        ] {
            assert_eq!(s.parse::<Address>().unwrap().to_string(), s);
        }
        for bad in [
            "vsock://x:1",
            "vsock://1",
            "unix://relative",
            "http://x",
            "",
            "unix://",
        ] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_live_unix_socket_is_not_stolen() {
        let dir = tempfile::tempdir().unwrap();
        let addr = Address::Unix(dir.path().join("s.sock"));
        let first = Listener::bind(&addr).await.unwrap();
        let accepting = tokio::spawn(async move {
            let _ = first.accept().await;
            first
        });
        let err = Listener::bind(&addr).await.unwrap_err();
        assert!(matches!(err, ProtocolError::Io(e) if e.kind() == std::io::ErrorKind::AddrInUse));
        drop(accepting.await.unwrap());
        // After the owner is gone, the path can be bound again.
        Listener::bind(&addr).await.unwrap();
    }
}
