//! `enclosure-init`: PID 1 of the Enclosure enclave image.
//!
//! It carries out the plan in [`enclosure_enclave::init`]: mount /proc, /sys, /dev and /tmp,
//! point stdio at the console, load the NSM driver if the image ships it, send the Nitro boot
//! heartbeat to the parent, then exec the enclave binary in nitro mode. Any failure is fatal:
//! init prints why and exits, the kernel panics on a dead PID 1, and the enclave stops rather
//! than run half set up.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use enclosure_enclave::init::{
    ENCLAVE_PATH, HEARTBEAT, HEARTBEAT_CID, HEARTBEAT_PORT, MOUNTS, Mount, NSM_MODULE_PATH,
    check_heartbeat_reply, enclave_args, enclave_env,
};
use nix::errno::Errno;
use nix::kmod::{ModuleInitFlags, finit_module};
use nix::mount::{MsFlags, mount};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, VsockAddr, connect, socket};
use nix::sys::stat::Mode;

fn main() -> ExitCode {
    match boot() {
        // `boot` only returns when exec failed, which it reports as an error.
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("enclosure-init: {e}");
            ExitCode::FAILURE
        }
    }
}

fn boot() -> Result<std::convert::Infallible, String> {
    for m in MOUNTS {
        mount_one(m)?;
    }
    // The kernel opens /dev/console for init only if the initramfs has that node; ours has no
    // device nodes (the ramdisk writer archives none), so attach stdio once devtmpfs is there.
    attach_console();
    load_nsm_module()?;
    heartbeat()?;
    let err = Command::new(ENCLAVE_PATH)
        .args(enclave_args())
        .env_clear()
        .envs(enclave_env())
        .exec();
    Err(format!("exec {ENCLAVE_PATH}: {err}"))
}

fn mount_one(m: &Mount) -> Result<(), String> {
    match nix::unistd::mkdir(m.target, Mode::from_bits_truncate(m.dir_mode)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(format!("mkdir {}: {e}", m.target)),
    }
    let mut flags = MsFlags::empty();
    flags.set(MsFlags::MS_NOSUID, m.nosuid);
    flags.set(MsFlags::MS_NODEV, m.nodev);
    flags.set(MsFlags::MS_NOEXEC, m.noexec);
    match mount(Some(m.source), m.target, Some(m.fstype), flags, m.data) {
        Ok(()) => Ok(()),
        Err(Errno::EBUSY) if m.may_exist => Ok(()),
        Err(e) => Err(format!("mount {} on {}: {e}", m.fstype, m.target)),
    }
}

fn attach_console() {
    // Without a console the enclave still runs; it only cannot be watched in debug mode.
    let Ok(console) = File::options().read(true).write(true).open("/dev/console") else {
        return;
    };
    let _ = nix::unistd::dup2_stdin(&console);
    let _ = nix::unistd::dup2_stdout(&console);
    let _ = nix::unistd::dup2_stderr(&console);
}

fn load_nsm_module() -> Result<(), String> {
    let module = match File::open(NSM_MODULE_PATH) {
        Ok(f) => f,
        // Kernels with the driver built in need no module.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("open {NSM_MODULE_PATH}: {e}")),
    };
    match finit_module(&module, c"", ModuleInitFlags::empty()) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(format!("load {NSM_MODULE_PATH}: {e}")),
    }
}

/// Tells the parent that the image booted: connect to CID 3 port 9000, send 0xB7, read it back.
fn heartbeat() -> Result<(), String> {
    let fd = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("heartbeat socket: {e}"))?;
    connect(
        fd.as_raw_fd(),
        &VsockAddr::new(HEARTBEAT_CID, HEARTBEAT_PORT),
    )
    .map_err(|e| format!("heartbeat connect to {HEARTBEAT_CID}:{HEARTBEAT_PORT}: {e}"))?;
    let mut stream = File::from(fd);
    stream
        .write_all(&[HEARTBEAT])
        .map_err(|e| format!("heartbeat send: {e}"))?;
    let mut reply = [0u8; 1];
    let n = stream
        .read(&mut reply)
        .map_err(|e| format!("heartbeat reply: {e}"))?;
    check_heartbeat_reply(&reply[..n]).map_err(|e| e.to_string())
}
