//! A host process connected to a streaming session (the process runtime's `exec`):
//! through pipes, or through a pseudo-terminal when the session has a TTY.

use super::pty::{self, Pty};
use crate::node::stream::{self, Outcome, Session};
use bytes::Bytes;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::mpsc;

const CHUNK: usize = 32 * 1024;

/// Runs `command` with the session's streams; returns once it has exited and its
/// output has been handed over.
pub async fn run(command: Command, session: Session) -> Outcome {
    if session.tty {
        on_terminal(command, session).await
    } else {
        piped(command, session).await
    }
}

fn exit_code(status: ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn wanted<T>(stream: &Option<T>) -> Stdio {
    if stream.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    }
}

async fn piped(mut command: Command, session: Session) -> Outcome {
    let Session { stdin, stdout, stderr, .. } = session;
    command.stdin(wanted(&stdin)).stdout(wanted(&stdout)).stderr(wanted(&stderr)).kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => return Outcome::Failed(format!("starting {:?}: {error}", command.as_std().get_program())),
    };
    // The pipe goes with the task: its end is the command's end of input.
    let feeding = stdin.zip(child.stdin.take()).map(|(input, pipe)| tokio::spawn(stream::feed(input, pipe)));
    let out = child.stdout.take().zip(stdout).map(|(pipe, to)| tokio::spawn(pump(pipe, to)));
    let err = child.stderr.take().zip(stderr).map(|(pipe, to)| tokio::spawn(pump(pipe, to)));
    let status = child.wait().await;
    // The output is complete when the pipes reach their end (a background child
    // still holding them keeps the session open, as it would under the kubelet).
    for pump in [out, err].into_iter().flatten() {
        let _ = pump.await;
    }
    if let Some(feeding) = feeding {
        feeding.abort();
    }
    match status {
        Ok(status) => Outcome::Exited(exit_code(status)),
        Err(error) => Outcome::Failed(format!("waiting for the command: {error}")),
    }
}

async fn pump(mut from: impl AsyncRead + Unpin, to: mpsc::Sender<Bytes>) {
    let mut buffer = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.send(Bytes::copy_from_slice(&buffer[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn on_terminal(mut command: Command, session: Session) -> Outcome {
    let Session { stdin, stdout, mut resize, .. } = session;
    let spawned = (|| {
        let Pty { master, slave } = Pty::open()?;
        command
            .stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave))
            .env("TERM", "xterm")
            .kill_on_drop(true);
        // SAFETY: the hook only calls async-signal-safe functions (setsid, ioctl).
        unsafe { command.pre_exec(pty::take_controlling_terminal) };
        let child = command.spawn()?;
        Ok::<_, std::io::Error>((master, child))
    })();
    // The parent's copies of the slave side go with the command, so reading the
    // master ends (EIO) once the command and its children have closed theirs.
    drop(command);
    let (master, mut child) = match spawned {
        Ok(spawned) => spawned,
        Err(error) => return Outcome::Failed(format!("starting the command on a terminal: {error}")),
    };
    let (Ok(reader), Ok(writer), Ok(sizer)) = (master.try_clone(), master.try_clone(), master.try_clone()) else {
        return Outcome::Failed("duplicating the terminal".into());
    };
    // Terminal I/O is blocking: one thread each way.
    let output = stdout.map(|to| {
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut file = std::fs::File::from(reader);
            let mut buffer = vec![0u8; CHUNK];
            while let Ok(n @ 1..) = file.read(&mut buffer) {
                if to.blocking_send(Bytes::copy_from_slice(&buffer[..n])).is_err() {
                    break;
                }
            }
        })
    });
    if let Some(mut input) = stdin {
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut file = std::fs::File::from(writer);
            while let Some(chunk) = input.blocking_recv() {
                if file.write_all(&chunk).is_err() {
                    break;
                }
            }
        });
    }
    let resizing = tokio::spawn(async move {
        while let Some(size) = resize.recv().await {
            let _ = pty::resize(&sizer, size);
        }
    });
    let status = child.wait().await;
    if let Some(output) = output {
        let _ = output.await;
    }
    resizing.abort();
    drop(master);
    match status {
        Ok(status) => Outcome::Exited(exit_code(status)),
        Err(error) => Outcome::Failed(format!("waiting for the command: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::stream::{drain, session, Options};

    #[tokio::test]
    async fn a_piped_command_reads_stdin_to_its_end() {
        let (client, session) = session(&Options::parse("command=x&stdin=1&stdout=1&stderr=1"));
        let mut command = Command::new("sh");
        command.args(["-c", "tr a-z A-Z; echo done >&2; exit 5"]);
        let running = tokio::spawn(run(command, session));
        let stdin = client.stdin.unwrap();
        stdin.send(Bytes::from_static(b"hello\n")).await.unwrap();
        drop(stdin);
        let (out, err) = tokio::join!(drain(client.stdout), drain(client.stderr));
        assert_eq!((out.as_slice(), err.as_slice()), (&b"HELLO\n"[..], &b"done\n"[..]));
        assert_eq!(running.await.unwrap(), Outcome::Exited(5));
    }

    #[tokio::test]
    async fn a_terminal_command_sees_a_tty_of_the_requested_size() {
        let (client, session) = session(&Options::parse("command=x&stdin=1&stdout=1&tty=1"));
        client.resize.send(crate::node::stream::TerminalSize { width: 91, height: 33 }).await.unwrap();
        let mut command = Command::new("sh");
        // Wait for the resize to land, then report what the terminal says.
        command.args(["-c", "sleep 0.3; test -t 0 && stty size"]);
        let running = tokio::spawn(run(command, session));
        let out = drain(client.stdout).await;
        assert_eq!(String::from_utf8_lossy(&out).trim(), "33 91");
        assert_eq!(running.await.unwrap(), Outcome::Exited(0));
        drop(client.stdin);
    }
}
