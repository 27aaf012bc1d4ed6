//! What PID 1 of an enclave image does, as data: the mounts, the Nitro boot heartbeat and the
//! command it execs. `enclosure-init` carries this plan out with system calls; keeping the plan
//! here lets it be read, reviewed and tested on machines that have no vsock and no PID 1.
//!
//! The image has two ramdisks, which the kernel unpacks into one root: the bootstrap ramdisk
//! holds [`INIT_PATH`] (and, optionally, [`NSM_MODULE_PATH`]), the application ramdisk holds
//! [`ENCLAVE_PATH`]. Both are measured: PCR1 covers the bootstrap, PCR2 the application.

use std::fmt;

/// Where the kernel looks for init in an initramfs (its default `rdinit=`).
pub const INIT_PATH: &str = "/init";
/// Where the enclave binary sits in the application ramdisk.
pub const ENCLAVE_PATH: &str = "/bin/enclosure-enclave";
/// The NSM driver module, loaded when the bootstrap ramdisk carries it. Kernels that build the
/// driver in (`CONFIG_NSM=y`, Linux 6.8 and later) need no module, so it is optional.
pub const NSM_MODULE_PATH: &str = "/nsm.ko";
/// The parent instance's vsock CID, which listens for the boot heartbeat.
pub const HEARTBEAT_CID: u32 = 3;
/// The port the parent listens on for the heartbeat.
pub const HEARTBEAT_PORT: u32 = 9000;
/// The heartbeat byte: init sends it once it is running, and the parent echoes it back. Until
/// the parent has it, `nitro-cli run-enclave` treats the enclave as not booted.
pub const HEARTBEAT: u8 = 0xB7;
/// `VMADDR_CID_ANY`: the enclave accepts connections on any of its CIDs.
pub const VSOCK_CID_ANY: u32 = u32::MAX;
/// The vsock port the enclave serves the protocol on; the host proxy connects to it.
pub const ENCLAVE_VSOCK_PORT: u32 = 5000;

/// One file system to mount before the enclave starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The source name shown in /proc/mounts.
    pub source: &'static str,
    /// Where it is mounted; created (mode [`Mount::dir_mode`]) if missing.
    pub target: &'static str,
    /// The file system type.
    pub fstype: &'static str,
    /// `MS_NOSUID`: nothing in the enclave needs set-uid programs.
    pub nosuid: bool,
    /// `MS_NODEV`: device nodes only under /dev.
    pub nodev: bool,
    /// `MS_NOEXEC`: nothing runs from these file systems.
    pub noexec: bool,
    /// Mount options passed as data (for example a tmpfs mode).
    pub data: Option<&'static str>,
    /// Mode of the mount point when init has to create it.
    pub dir_mode: u32,
    /// Whether "already mounted" (EBUSY) is fine: the kernel may mount devtmpfs itself.
    pub may_exist: bool,
}

/// The mounts, in order. The enclave needs /proc (tokio reads the CPU count and the standard
/// library the executable path), /sys (the NSM device's class), /dev (`/dev/nsm`,
/// `/dev/urandom`, `/dev/console`) and a private /tmp; nothing else.
pub const MOUNTS: &[Mount] = &[
    Mount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        nosuid: true,
        nodev: true,
        noexec: true,
        data: None,
        dir_mode: 0o555,
        may_exist: false,
    },
    Mount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        nosuid: true,
        nodev: true,
        noexec: true,
        data: None,
        dir_mode: 0o555,
        may_exist: false,
    },
    Mount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        nosuid: true,
        nodev: false,
        noexec: true,
        data: Some("mode=0755"),
        dir_mode: 0o755,
        may_exist: true,
    },
    Mount {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        nosuid: true,
        nodev: true,
        noexec: true,
        data: Some("mode=1777"),
        dir_mode: 0o1777,
        may_exist: false,
    },
];

/// The enclave's production command line: nitro mode (NSM attester, no dev conveniences),
/// listening on vsock for the host proxy. Built without the `dev` feature, the binary has no
/// other mode.
pub fn enclave_args() -> Vec<String> {
    vec![
        "--mode".into(),
        "nitro".into(),
        "--listen".into(),
        format!("vsock://{VSOCK_CID_ANY}:{ENCLAVE_VSOCK_PORT}"),
    ]
}

/// The environment the enclave starts with: nothing inherited from the kernel command line
/// (whose unknown words the kernel passes to init as variables), so the measured image alone
/// decides how the enclave runs.
pub fn enclave_env() -> Vec<(String, String)> {
    vec![
        ("PATH".into(), "/bin".into()),
        ("RUST_LOG".into(), "info".into()),
    ]
}

/// Why the parent's reply to the heartbeat is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeartbeatError {
    /// The parent closed the connection without answering.
    NoReply,
    /// The parent answered with something other than [`HEARTBEAT`].
    WrongReply(u8),
}

impl fmt::Display for HeartbeatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeartbeatError::NoReply => write!(f, "the parent closed the heartbeat connection"),
            HeartbeatError::WrongReply(b) => {
                write!(
                    f,
                    "the parent answered the heartbeat with {b:#04x}, not {HEARTBEAT:#04x}"
                )
            }
        }
    }
}

impl std::error::Error for HeartbeatError {}

/// Checks the parent's answer to the heartbeat: exactly the heartbeat byte echoed back.
pub fn check_heartbeat_reply(reply: &[u8]) -> Result<(), HeartbeatError> {
    match reply.first() {
        None => Err(HeartbeatError::NoReply),
        Some(&HEARTBEAT) => Ok(()),
        Some(&other) => Err(HeartbeatError::WrongReply(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use enclosure_protocol::Address;

    #[test]
    fn mounts_cover_what_the_enclave_opens() {
        let targets: Vec<_> = MOUNTS.iter().map(|m| m.target).collect();
        assert_eq!(targets, ["/proc", "/sys", "/dev", "/tmp"]);
        // /dev/nsm lives on /dev, so /dev alone must allow device nodes.
        for m in MOUNTS {
            assert!(m.nosuid && m.noexec, "{} should be nosuid,noexec", m.target);
            assert_eq!(m.nodev, m.target != "/dev", "{}", m.target);
            assert!(m.target.starts_with('/') && !m.target[1..].contains('/'));
        }
        // Only devtmpfs may already be mounted by the kernel.
        let tolerant: Vec<_> = MOUNTS.iter().filter(|m| m.may_exist).collect();
        assert_eq!(tolerant.len(), 1);
        assert_eq!(tolerant[0].fstype, "devtmpfs");
    }

    #[test]
    fn enclave_runs_in_nitro_mode_on_vsock() {
        let args = enclave_args();
        assert_eq!(args[..2], ["--mode", "nitro"]);
        assert_eq!(args[2], "--listen");
        let addr: Address = args[3].parse().unwrap();
        assert_eq!(
            addr,
            Address::Vsock {
                cid: VSOCK_CID_ANY,
                port: ENCLAVE_VSOCK_PORT
            }
        );
        assert!(!args.iter().any(|a| a.contains("dev")));
        assert!(
            enclave_env()
                .iter()
                .all(|(k, _)| !k.starts_with("ENCLOSURE_"))
        );
    }

    #[test]
    fn heartbeat_reply_must_echo_the_byte() {
        assert_eq!(HEARTBEAT, 0xB7);
        assert_eq!((HEARTBEAT_CID, HEARTBEAT_PORT), (3, 9000));
        assert!(check_heartbeat_reply(&[0xB7]).is_ok());
        assert_eq!(check_heartbeat_reply(&[]), Err(HeartbeatError::NoReply));
        let wrong = check_heartbeat_reply(&[0x00]).unwrap_err();
        assert_eq!(wrong, HeartbeatError::WrongReply(0));
        assert!(wrong.to_string().contains("0xb7"));
    }

    #[test]
    fn paths_are_absolute_and_distinct() {
        let paths = [INIT_PATH, ENCLAVE_PATH, NSM_MODULE_PATH];
        assert!(paths.iter().all(|p| p.starts_with('/')));
        assert!(MOUNTS.iter().all(|m| !ENCLAVE_PATH.starts_with(m.target)));
    }
}
