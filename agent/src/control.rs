//! The agent's local control socket: how the machine's user, through `natter-agent chat` (e.g.
//! from a tray menu), asks the running agent to open the start page where they pick an operator
//! to chat with.
//!
//! The protocol is one line each way: the client sends `chat`, the agent answers `opened`,
//! `refused (<reason>): <message>` or `failed: <why>`. On Unix it is a Unix socket of mode
//! 0660: the agent's user and group may use it (an installation puts the machine's users in
//! that group). On Windows it is a named pipe whose name is made from the same path
//! ([`pipe_name`]), with the pipe's default access.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

#[cfg(unix)]
use tokio::net::{UnixListener as Listener, UnixStream};
#[cfg(windows)]
pub use windows::Listener;

use crate::AgentHandle;

/// How long a client may take to send its line.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest line read (a command is one short word).
const MAX_LINE: u64 = 64;
/// How long `natter-agent chat` waits for the agent's answer (the broker's answer, then the
/// opener).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the control socket could not be served.
#[derive(Debug, thiserror::Error)]
#[error("control socket {path}: {source}")]
pub struct ControlError {
    path: String,
    #[source]
    source: std::io::Error,
}

/// Binds the control socket at `path` (replacing a stale one) and returns the listener.
#[cfg(unix)]
pub fn bind(path: &Path) -> Result<Listener, ControlError> {
    let error = |source| ControlError {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(error)?;
    }
    // A socket left by an agent that died; a live agent on the same path would be cut off, but
    // two agents of one machine are a mistake anyway.
    if std::fs::symlink_metadata(path).is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_socket()
    }) {
        std::fs::remove_file(path).map_err(error)?;
    }
    let listener = Listener::bind(path).map_err(error)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(error)?;
    Ok(listener)
}

/// Binds the control pipe named after `path` ([`pipe_name`]) and returns the listener.
#[cfg(windows)]
pub fn bind(path: &Path) -> Result<Listener, ControlError> {
    Listener::bind(&pipe_name(path)).map_err(|source| ControlError {
        path: pipe_name(path),
        source,
    })
}

/// The Windows named pipe for the control socket path `path`: `\\.\pipe\natter-agent-` and the
/// path's characters, those a pipe name cannot hold (`\`, `/`, `:`) as `-`.
pub fn pipe_name(path: &Path) -> String {
    let flat: String = path
        .display()
        .to_string()
        .chars()
        .map(|c| {
            if matches!(c, '\\' | '/' | ':') {
                '-'
            } else {
                c
            }
        })
        .collect();
    format!(r"\\.\pipe\natter-agent-{flat}")
}

/// Answers the control socket's clients until `shutdown`, then removes the socket.
pub async fn serve(
    #[allow(unused_mut)] mut listener: Listener,
    path: PathBuf,
    handle: AgentHandle,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(answer(stream, handle.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.cancelled() => break,
        }
    }
    #[cfg(unix)]
    let _ = std::fs::remove_file(&path);
    #[cfg(windows)]
    let _ = path; // a pipe goes with its last handle
}

async fn answer(stream: impl AsyncRead + AsyncWrite, handle: AgentHandle) {
    let (read, mut write) = tokio::io::split(stream);
    let mut line = String::new();
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_LINE));
    let got = tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line)).await;
    let reply = match (got, line.trim()) {
        (Ok(Ok(_)), "chat") => {
            let outcome = handle.request_chat().await;
            tracing::info!(%outcome, "the machine user asked for a chat");
            outcome.to_string()
        }
        (Ok(Ok(_)), other) => format!("failed: unknown command {other:?} (try \"chat\")"),
        _ => "failed: no command received".to_string(),
    };
    let _ = write.write_all(format!("{reply}\n").as_bytes()).await;
    let _ = write.shutdown().await;
}

/// `natter-agent chat`: asks the agent listening on `path` for the start page; returns its
/// answer line (`opened`, `refused (…): …`, `failed: …`).
pub async fn ask_chat(path: &Path) -> Result<String, String> {
    let talk = async {
        let mut stream = connect(path).await.map_err(|e| {
            format!(
                "cannot reach the agent at {} ({e}); is natter-agent running?",
                path.display()
            )
        })?;
        stream
            .write_all(b"chat\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        Ok(line.trim().to_string())
    };
    tokio::time::timeout(ANSWER_TIMEOUT, talk)
        .await
        .map_err(|_| "the agent did not answer in time".to_string())?
}

#[cfg(unix)]
async fn connect(path: &Path) -> std::io::Result<UnixStream> {
    UnixStream::connect(path).await
}

#[cfg(windows)]
async fn connect(path: &Path) -> std::io::Result<tokio::net::windows::named_pipe::NamedPipeClient> {
    windows::connect(&pipe_name(path)).await
}

/// The control pipe on Windows: a named pipe server instance waits for each client, and a new
/// one is made as soon as one connects, so the next client always finds one.
#[cfg(windows)]
mod windows {
    use std::time::Duration;

    use tokio::net::windows::named_pipe::{
        ClientOptions, NamedPipeClient, NamedPipeServer, ServerOptions,
    };

    /// `ERROR_PIPE_BUSY`: every instance is taken; try again shortly.
    const PIPE_BUSY: i32 = 231;

    pub struct Listener {
        name: String,
        next: NamedPipeServer,
    }

    impl Listener {
        pub(super) fn bind(name: &str) -> std::io::Result<Listener> {
            let next = ServerOptions::new()
                .first_pipe_instance(true)
                .create(name)?;
            Ok(Listener {
                name: name.to_string(),
                next,
            })
        }

        /// The next client's connection (the second value mirrors `UnixListener::accept`).
        pub async fn accept(&mut self) -> std::io::Result<(NamedPipeServer, ())> {
            self.next.connect().await?;
            let fresh = ServerOptions::new().create(&self.name)?;
            Ok((std::mem::replace(&mut self.next, fresh), ()))
        }
    }

    pub(super) async fn connect(name: &str) -> std::io::Result<NamedPipeClient> {
        for _ in 0..50 {
            match ClientOptions::new().open(name) {
                Err(e) if e.raw_os_error() == Some(PIPE_BUSY) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
        ClientOptions::new().open(name)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_socket_answers_one_line_and_refuses_unknown_commands() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = bind(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let stop = CancellationToken::new();
        let served = tokio::spawn(serve(
            listener,
            path.clone(),
            AgentHandle::default(),
            stop.clone(),
        ));
        // An agent that is not connected says so; the client gets the line.
        assert_eq!(
            ask_chat(&path).await.unwrap(),
            "failed: the agent is not running"
        );
        let mut stream = UnixStream::connect(&path).await.unwrap();
        stream.write_all(b"reboot\n").await.unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await.unwrap();
        assert!(line.starts_with("failed: unknown command"), "{line}");
        // A stopped agent removes its socket; the client then says what is wrong.
        stop.cancel();
        served.await.unwrap();
        assert!(!path.exists());
        assert!(
            ask_chat(&path)
                .await
                .unwrap_err()
                .contains("is natter-agent running?")
        );
    }
}

#[cfg(test)]
mod pipe_names {
    #[test]
    fn a_pipe_name_is_made_from_the_socket_path() {
        let name = super::pipe_name(std::path::Path::new(r"C:\ProgramData\Natter\pc1.nk.sock"));
        assert_eq!(
            name,
            r"\\.\pipe\natter-agent-C--ProgramData-Natter-pc1.nk.sock"
        );
    }
}
