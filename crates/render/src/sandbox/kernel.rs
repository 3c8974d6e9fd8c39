//! The kernel's half of the sandbox: Landlock for the filesystem (and TCP),
//! seccomp for sockets. A renderer runs code its tenant wrote (templates,
//! schemas, generators) and each tool has its own ways to reach out
//! (`http://` paths in a kustomization, `$ref` in a values schema), so
//! no argument check can be complete; the kernel refuses instead.
//!
//! What a confined program has:
//! - read and execute of its own binary;
//! - read and write (no execute) of the folders it is given: the export
//!   of the repository at that commit, the fetched archive and its
//!   scratch folder;
//! - nothing else of the filesystem;
//! - no socket of any family (`socket(2)` fails with `EACCES`), no TCP
//!   bind or connect (Landlock, where the kernel has ABI 4), no
//!   `io_uring`, no abstract Unix sockets or signals outside its domain
//!   (Landlock ABI 6).
//!
//! Both work unprivileged: `PR_SET_NO_NEW_PRIVS` is all they need, so
//! kas's non-root image confines its renders without any capability.
//!
//! The rules are prepared in the parent ([`Prepared::new`]: opening
//! files, allocating the filter) and applied in the child between fork
//! and exec ([`Prepared::apply`]: three system calls, no allocation).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What a confined program may touch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Confinement {
    /// Files it may read and execute: its own binary.
    pub executables: Vec<PathBuf>,
    /// Folders it may read and write under, never execute from.
    pub folders: Vec<PathBuf>,
    /// Files or folders it may read and execute under, never write: the
    /// system's git and its libraries, for a render that fetches remote
    /// bases.
    pub system: Vec<PathBuf>,
    /// Files it may read and write but not execute (`/dev/null`).
    pub devices: Vec<PathBuf>,
    /// The one TCP port on loopback it may connect to: kas's egress proxy
    /// for this render, which decides every connection (`None`: no
    /// network at all).
    pub proxy_port: Option<u16>,
}

// Landlock's ABI (include/uapi/linux/landlock.h).
const CREATE_RULESET_VERSION: u32 = 1;
const RULE_PATH_BENEATH: libc::c_int = 1;
const RULE_NET_PORT: libc::c_int = 2;
const FS_EXECUTE: u64 = 1 << 0;
const FS_WRITE_FILE: u64 = 1 << 1;
const FS_READ_FILE: u64 = 1 << 2;
/// Rights of ABI 1, all of which apply to folders (bits 0–12).
const FS_ABI1: u64 = (1 << 13) - 1;
const FS_REFER: u64 = 1 << 13;
const FS_TRUNCATE: u64 = 1 << 14;
const FS_IOCTL_DEV: u64 = 1 << 15;
/// The rights a rule on a file (not a folder) may carry.
const FS_FILE_RIGHTS: u64 = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV;
const NET_BIND_TCP: u64 = 1 << 0;
const NET_CONNECT_TCP: u64 = 1 << 1;
const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
const SCOPE_SIGNAL: u64 = 1 << 1;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

#[repr(C)]
struct NetPortAttr {
    allowed_access: u64,
    port: u64,
}

/// Why the kernel cannot confine a program here.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error(
        "the kernel has no Landlock (it needs Linux 5.13 or later with Landlock among its LSMs, e.g. lsm=landlock,…): {0}"
    )]
    NoLandlock(io::Error),
    #[error("{what}: {error}")]
    Call { what: String, error: io::Error },
}

fn call(what: impl Into<String>) -> impl FnOnce(io::Error) -> Unavailable {
    let what = what.into();
    move |error| Unavailable::Call { what, error }
}

/// The Landlock ABI the kernel speaks, 0 when it has none.
pub fn landlock_abi() -> Result<i64, Unavailable> {
    // SAFETY: with a null attribute, size 0 and the VERSION flag the call
    // only returns a number.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    if abi < 1 {
        return Err(Unavailable::NoLandlock(io::Error::last_os_error()));
    }
    Ok(abi)
}

/// A confinement ready to apply in a child: the ruleset (its file
/// descriptor is close-on-exec) and the seccomp program.
pub struct Prepared {
    ruleset: OwnedFd,
    filter: Vec<libc::sock_filter>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("ruleset", &self.ruleset)
            .field("filter", &self.filter.len())
            .finish()
    }
}

impl Prepared {
    /// Opens every path of `confinement` and builds the rules; fails
    /// when the kernel cannot enforce them or a path does not exist.
    pub fn new(confinement: &Confinement) -> Result<Self, Unavailable> {
        let abi = landlock_abi()?;
        let mut fs = FS_ABI1;
        if abi >= 2 {
            fs |= FS_REFER;
        }
        if abi >= 3 {
            fs |= FS_TRUNCATE;
        }
        if abi >= 5 {
            fs |= FS_IOCTL_DEV;
        }
        let attr = RulesetAttr {
            handled_access_fs: fs,
            handled_access_net: if abi >= 4 {
                NET_BIND_TCP | NET_CONNECT_TCP
            } else {
                0
            },
            scoped: if abi >= 6 {
                SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
            } else {
                0
            },
        };
        // An older kernel refuses fields it does not know, even zero ones
        // past its size: give it the size it knows.
        let size = match abi {
            1..=3 => 8,
            4 | 5 => 16,
            _ => std::mem::size_of::<RulesetAttr>(),
        };
        // SAFETY: attr outlives the call and size does not exceed it.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                &attr as *const RulesetAttr,
                size,
                0u32,
            )
        };
        if fd < 0 {
            return Err(call("creating a Landlock ruleset")(
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: the call returned a new descriptor that nothing else owns.
        let ruleset = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        for file in &confinement.executables {
            allow(
                &ruleset,
                file,
                (FS_EXECUTE | FS_READ_FILE) & fs & FS_FILE_RIGHTS,
            )?;
        }
        for folder in &confinement.folders {
            allow(&ruleset, folder, fs & !FS_EXECUTE)?;
        }
        let read_execute = FS_EXECUTE | FS_READ_FILE | (1 << 3); // READ_DIR
        for path in &confinement.system {
            let access = match path.is_dir() {
                true => read_execute,
                false => read_execute & FS_FILE_RIGHTS,
            };
            allow(&ruleset, path, access & fs)?;
        }
        for device in &confinement.devices {
            allow(&ruleset, device, (FS_READ_FILE | FS_WRITE_FILE) & fs)?;
        }
        if let Some(port) = confinement.proxy_port {
            if abi < 4 {
                return Err(Unavailable::Call {
                    what: "a render that reaches the network through kas's egress proxy".into(),
                    error: io::Error::other(format!(
                        "Landlock ABI {abi} cannot limit TCP to one port (ABI 4, Linux 6.7, can)"
                    )),
                });
            }
            allow_port(&ruleset, port)?;
        }
        Ok(Prepared {
            ruleset,
            filter: seccomp_program(confinement.proxy_port.is_some()),
        })
    }

    /// Confines the calling thread, and every program it then executes,
    /// for good. Async-signal-safe: made between fork and exec.
    pub fn apply(&self) -> io::Result<()> {
        // SAFETY: plain system calls on integers and on memory this value
        // owns for their whole duration.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::syscall(
                libc::SYS_landlock_restrict_self,
                self.ruleset.as_raw_fd(),
                0u32,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            let program = libc::sock_fprog {
                len: self.filter.len() as libc::c_ushort,
                filter: self.filter.as_ptr().cast_mut(),
            };
            if libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0u32,
                &program as *const libc::sock_fprog,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// Adds a rule: `access` beneath `path` (or on it, for a file).
fn allow(ruleset: &OwnedFd, path: &Path, access: u64) -> Result<(), Unavailable> {
    let name = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| call(format!("{}", path.display()))(io::ErrorKind::InvalidInput.into()))?;
    // SAFETY: a NUL-terminated path; O_PATH opens it for reference only.
    let fd = unsafe { libc::open(name.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(call(format!("opening {}", path.display()))(
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let rule = PathBeneathAttr {
        allowed_access: access,
        parent_fd: fd.as_raw_fd(),
    };
    // SAFETY: rule outlives the call.
    let done = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset.as_raw_fd(),
            RULE_PATH_BENEATH,
            &rule as *const PathBeneathAttr,
            0u32,
        )
    };
    if done != 0 {
        return Err(call(format!("a Landlock rule for {}", path.display()))(
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Adds a rule: TCP connect to `port` (on any address: the program is
/// given only `127.0.0.1:port`, kas's proxy, and has no resolver).
fn allow_port(ruleset: &OwnedFd, port: u16) -> Result<(), Unavailable> {
    let rule = NetPortAttr {
        allowed_access: NET_CONNECT_TCP,
        port: u64::from(port),
    };
    // SAFETY: rule outlives the call.
    let done = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset.as_raw_fd(),
            RULE_NET_PORT,
            &rule as *const NetPortAttr,
            0u32,
        )
    };
    if done != 0 {
        return Err(call(format!("a Landlock rule for TCP port {port}"))(
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;
/// x32 system calls on x86_64 carry this bit; they are refused whole.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn statement(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// The seccomp program: a system call of another architecture (or x32)
/// kills the program; `socket` fails with `EACCES` (with `stream`: but
/// for an IPv4 or IPv6 stream socket, which Landlock then lets connect to
/// one port only; never UDP, so no DNS of its own), `io_uring_setup` with
/// `ENOSYS` (its rings would do IO the filter never sees); anything else
/// is allowed (the filesystem is Landlock's).
fn seccomp_program(stream: bool) -> Vec<libc::sock_filter> {
    use libc::{
        AF_INET, AF_INET6, BPF_ABS, BPF_ALU, BPF_AND, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_K, BPF_LD,
        BPF_RET, BPF_W, EACCES, ENOSYS, SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO,
        SECCOMP_RET_KILL_PROCESS, SOCK_STREAM,
    };
    // Offsets in struct seccomp_data (the low half of each argument, as
    // both architectures are little-endian).
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    const ARG0: u32 = 16;
    const ARG1: u32 = 24;
    const ARG2: u32 = 32;
    let errno = |e: i32| SECCOMP_RET_ERRNO | (e as u32 & 0xffff);
    let mut program = vec![
        statement(BPF_LD | BPF_W | BPF_ABS, ARCH),
        jump(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH, 1, 0),
        statement(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        statement(BPF_LD | BPF_W | BPF_ABS, NR),
        jump(BPF_JMP | BPF_JGE | BPF_K, X32_SYSCALL_BIT, 0, 1),
        statement(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        jump(
            BPF_JMP | BPF_JEQ | BPF_K,
            libc::SYS_io_uring_setup as u32,
            0,
            1,
        ),
        statement(BPF_RET | BPF_K, errno(ENOSYS)),
    ];
    if stream {
        program.extend([
            // Not socket: allowed. Socket: the domain, the type without
            // its flags, then the protocol: 0 or TCP only (MPTCP, SCTP and
            // SMC are stream sockets Landlock's TCP port rule may not see).
            jump(BPF_JMP | BPF_JEQ | BPF_K, libc::SYS_socket as u32, 1, 0),
            statement(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
            statement(BPF_LD | BPF_W | BPF_ABS, ARG0),
            jump(BPF_JMP | BPF_JEQ | BPF_K, AF_INET as u32, 1, 0),
            jump(BPF_JMP | BPF_JEQ | BPF_K, AF_INET6 as u32, 0, 6),
            statement(BPF_LD | BPF_W | BPF_ABS, ARG1),
            statement(BPF_ALU | BPF_AND | BPF_K, 0xf),
            jump(BPF_JMP | BPF_JEQ | BPF_K, SOCK_STREAM as u32, 0, 3),
            statement(BPF_LD | BPF_W | BPF_ABS, ARG2),
            jump(BPF_JMP | BPF_JEQ | BPF_K, 0, 2, 0),
            jump(BPF_JMP | BPF_JEQ | BPF_K, libc::IPPROTO_TCP as u32, 1, 0),
            statement(BPF_RET | BPF_K, errno(EACCES)),
            statement(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        ]);
    } else {
        program.extend([
            jump(BPF_JMP | BPF_JEQ | BPF_K, libc::SYS_socket as u32, 0, 1),
            statement(BPF_RET | BPF_K, errno(EACCES)),
            statement(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        ]);
    }
    program
}

/// Why the probe does not show confinement holding: what it could not
/// set up, or what a confined thread could still do.
#[derive(Debug, thiserror::Error)]
pub enum ProbeFailed {
    #[error("a folder for the probe: {0}")]
    Folder(#[source] io::Error),
    /// A file or the loopback listener the probe tries to reach.
    #[error(transparent)]
    Setup(io::Error),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    #[error("confining a thread: {0}")]
    Confining(#[source] io::Error),
    #[error("a confined thread could not read its own folder")]
    OwnFolderUnreadable,
    #[error("a confined thread read {} outside its folder", .0.display())]
    ReadOutside(PathBuf),
    #[error("a confined thread connected to {0}")]
    Connected(std::net::SocketAddr),
    #[error("a confined thread opened a socket")]
    OpenedSocket,
    #[error("the probe's thread panicked")]
    Panicked,
}

/// Shows that confinement holds on this kernel: a thread confined to a
/// fresh folder reads inside it, and fails to read a file outside it,
/// to connect to a listener on loopback and to open a socket at all. The
/// thread ends with its confinement; the process is untouched.
pub fn probe() -> Result<(), ProbeFailed> {
    let inside = tempfile::Builder::new()
        .prefix("tether-probe-")
        .tempdir()
        .map_err(ProbeFailed::Folder)?;
    let outside = tempfile::Builder::new()
        .prefix("tether-probe-outside-")
        .tempdir()
        .map_err(ProbeFailed::Folder)?;
    let (readable, secret) = (inside.path().join("in"), outside.path().join("secret"));
    std::fs::write(&readable, b"in").map_err(ProbeFailed::Setup)?;
    std::fs::write(&secret, b"secret").map_err(ProbeFailed::Setup)?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(ProbeFailed::Setup)?;
    let address = listener.local_addr().map_err(ProbeFailed::Setup)?;
    let prepared = Prepared::new(&Confinement {
        folders: vec![inside.path().to_owned()],
        ..Confinement::default()
    })?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                prepared.apply().map_err(ProbeFailed::Confining)?;
                if std::fs::read(&readable).is_err() {
                    return Err(ProbeFailed::OwnFolderUnreadable);
                }
                if std::fs::read(&secret).is_ok() {
                    return Err(ProbeFailed::ReadOutside(secret.clone()));
                }
                if std::net::TcpStream::connect(address).is_ok() {
                    return Err(ProbeFailed::Connected(address));
                }
                // SAFETY: socket(2) on integers; a descriptor it returns
                // is closed at once.
                let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
                if fd >= 0 {
                    // SAFETY: the descriptor just returned.
                    unsafe { libc::close(fd) };
                    return Err(ProbeFailed::OpenedSocket);
                }
                Ok(())
            })
            .join()
            .unwrap_or(Err(ProbeFailed::Panicked))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_holds_on_this_kernel() {
        probe().expect("Landlock and seccomp confine a thread here");
    }

    /// With a proxy port, that port on loopback is the one way out: not
    /// another port, not UDP (no DNS of its own), not a Unix socket.
    #[test]
    fn a_proxy_port_is_the_only_way_out() {
        let folder = tempfile::tempdir().expect("a folder");
        let proxy = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let other = std::net::TcpListener::bind("127.0.0.1:0").expect("another port");
        let (proxy_at, other_at) = (
            proxy.local_addr().expect("its address"),
            other.local_addr().expect("its address"),
        );
        let prepared = Prepared::new(&Confinement {
            folders: vec![folder.path().to_owned()],
            proxy_port: Some(proxy_at.port()),
            ..Confinement::default()
        })
        .expect("prepared");
        let outcome = std::thread::spawn(move || {
            prepared.apply().expect("confined");
            // SAFETY: socket(2) on integers; a descriptor returned is
            // closed at once.
            let mptcp = unsafe {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_MPTCP);
                if fd >= 0 {
                    libc::close(fd);
                }
                fd >= 0
            };
            assert!(
                !mptcp,
                "an MPTCP socket, which Landlock's TCP rule may not see"
            );
            (
                std::net::TcpStream::connect(proxy_at).is_ok(),
                std::net::TcpStream::connect(other_at).is_ok(),
                std::net::UdpSocket::bind("127.0.0.1:0").is_ok(),
                std::os::unix::net::UnixStream::pair().is_ok(),
                std::os::unix::net::UnixDatagram::unbound().is_ok(),
            )
        })
        .join()
        .expect("the thread");
        assert_eq!(
            outcome,
            (true, false, false, true, false),
            "(proxy, other port, UDP, socketpair, Unix socket)"
        );
    }
}
