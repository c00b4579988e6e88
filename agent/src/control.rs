//! The agent's local control socket (a Unix socket): how the machine's user, through
//! `natter-agent chat` (e.g. from a tray menu), asks the running agent to open the start page
//! where they pick an operator to chat with.
//!
//! The protocol is one line each way: the client sends `chat`, the agent answers `opened`,
//! `refused (<reason>): <message>` or `failed: <why>`. The socket is mode 0660: the agent's
//! user and group may use it (an installation puts the machine's users in that group).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

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
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
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
    let listener = UnixListener::bind(path).map_err(error)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(error)?;
    Ok(listener)
}

/// Answers the control socket's clients until `shutdown`, then removes the socket.
pub async fn serve(
    listener: UnixListener,
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
    let _ = std::fs::remove_file(&path);
}

async fn answer(stream: UnixStream, handle: AgentHandle) {
    let (read, mut write) = stream.into_split();
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
        let mut stream = UnixStream::connect(path).await.map_err(|e| {
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

#[cfg(test)]
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
