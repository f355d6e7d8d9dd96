//! Pseudo-terminals for `kubectl exec -t` in the process runtime: the command gets
//! the terminal's slave side as its stdin, stdout and stderr (and as its controlling
//! terminal, in a session of its own), the agent reads and writes the master side,
//! and the client's resizes become `TIOCSWINSZ` on it.

use crate::node::stream::TerminalSize;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

impl Pty {
    pub fn open() -> std::io::Result<Pty> {
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty stores two descriptors it opened in `master` and `slave`;
        // null name, termios and winsize pointers are allowed.
        let rc =
            unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just opened and are owned by nothing else.
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        // The command must not inherit the master side, or it never sees a hangup.
        // SAFETY: plain fcntl on a descriptor this function owns.
        unsafe { libc::fcntl(master.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        Ok(Pty { master, slave })
    }
}

/// Sets the terminal's size (the kernel signals SIGWINCH to its foreground group).
pub fn resize(master: &impl AsRawFd, size: TerminalSize) -> std::io::Result<()> {
    let winsize = libc::winsize { ws_row: size.height, ws_col: size.width, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which outlives the call.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &winsize) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// For `pre_exec`: makes the child a session leader whose controlling terminal is its
/// stdin (the pty's slave side).
pub fn take_controlling_terminal() -> std::io::Result<()> {
    // SAFETY: setsid and ioctl are async-signal-safe, as pre_exec requires.
    unsafe {
        if libc::setsid() < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
