//! Process plumbing that every Tether program shares, so that `kas`, `agentk`
//! and the development cluster start, log and stop the same way.
//!
//! - [`logging::init`] installs the `tracing` subscriber once per process.
//! - [`limits::raise_open_files`] lets a server hold as many connections
//!   as the system allows.
//! - [`files::write_private`] writes a secret readable by its owner only.
//! - [`https::connector`] is the one HTTPS client setup (rustls, ring).
//! - [`tls::acceptor`] is the one TLS server setup of kas's listeners.
//! - [`drain::Drain`] is the one tracker of every long task, which the
//!   drain waits on.
//! - [`shutdown::Shutdown`] turns SIGINT/SIGTERM into a drain signal that every
//!   long-running task can observe; a second signal forces the exit.
//!
//! Architecture invariant: this crate knows nothing of Kubernetes, git or the
//! agent protocol.

pub mod drain;
pub mod exposition;
pub mod files;
pub mod https;
pub mod limits;
pub mod logging;
pub mod serve;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

pub use drain::Drain;
pub use shutdown::Shutdown;
