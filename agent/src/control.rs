//! The agent's local control socket: how the machine's user, through `natter-agent chat` (e.g.
//! from a tray menu), asks the running agent to open the start page where they pick an operator
//! to chat with.
//!
//! The protocol is one line each way: the client sends `chat`, the agent answers `opened`,
//! `refused (<reason>): <message>` or `failed: <why>`. On Unix it is a Unix socket of mode
//! 0660: the agent's user and group may use it (an installation puts the machine's users in
//! that group). On Windows it is a named pipe whose name is made from the same path
//! ([`pipe_name`]), open to SYSTEM, Administrators and the machine's logged-on users only.

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
    let ask = async {
        let stream = connect(path).await.map_err(|e| {
            format!(
                "cannot reach the agent at {} ({e}); is natter-agent running?",
                path.display()
            )
        })?;
        talk(stream).await
    };
    tokio::time::timeout(ANSWER_TIMEOUT, ask)
        .await
        .map_err(|_| "the agent did not answer in time".to_string())?
}

/// Sends `chat` on a connected `stream` and reads the answer line.
async fn talk(mut stream: impl AsyncRead + AsyncWrite + Unpin) -> Result<String, String> {
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
///
/// Every instance gets the same security descriptor ([`PIPE_SDDL`]) and refuses clients from
/// other machines: only this machine's SYSTEM, Administrators and the users logged on to it
/// (console or Remote Desktop: the `INTERACTIVE` group) may talk to the agent.
#[cfg(windows)]
#[allow(unsafe_code)]
mod windows {
    use std::os::windows::fs::OpenOptionsExt;
    use std::os::windows::io::IntoRawHandle;
    use std::time::Duration;

    use tokio::net::windows::named_pipe::{NamedPipeClient, NamedPipeServer, ServerOptions};
    use windows_sys::Win32::Foundation::{GENERIC_READ, LocalFree};
    use windows_sys::Win32::Security::Authorization::{
        ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
    };
    use windows_sys::Win32::Security::{PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES};
    use windows_sys::Win32::Storage::FileSystem::{
        FILE_FLAG_OVERLAPPED, FILE_WRITE_DATA, SECURITY_IDENTIFICATION,
    };

    /// `ERROR_PIPE_BUSY`: every instance is taken; try again shortly.
    const PIPE_BUSY: i32 = 231;

    /// The control pipe's access, protected from inherited entries (`P`):
    /// - SYSTEM (`SY`, the service) and Administrators (`BA`): full control;
    /// - the pipe's owner (`OW`, the account the agent runs as: SYSTEM for the service, the
    ///   user for an agent started by hand): full control, so it may make the next instance;
    /// - logged-on users (`IU`, `INTERACTIVE`: console and Remote Desktop users, not network
    ///   logons or other services): read and write (`0x12019b`: `FILE_GENERIC_READ |
    ///   FILE_GENERIC_WRITE` without `FILE_APPEND_DATA`, which on a pipe is
    ///   `FILE_CREATE_PIPE_INSTANCE`: a user may talk to the agent but not put up an instance
    ///   of their own that other users' `natter-agent chat` would reach instead).
    pub(super) const PIPE_SDDL: &str = "D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GA;;;OW)(A;;0x12019b;;;IU)";

    /// [`PIPE_SDDL`] as a security descriptor, freed on drop.
    pub(super) struct PipeSecurity(PSECURITY_DESCRIPTOR);

    // SAFETY: the descriptor is a self-relative block owned by this value and only read.
    unsafe impl Send for PipeSecurity {}
    unsafe impl Sync for PipeSecurity {}

    impl PipeSecurity {
        pub(super) fn new() -> std::io::Result<PipeSecurity> {
            let sddl: Vec<u16> = PIPE_SDDL.encode_utf16().chain([0]).collect();
            let mut descriptor: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
            // SAFETY: a NUL-terminated string and an out-pointer to a local; on success the
            // descriptor is allocated with LocalAlloc and freed in `drop`.
            let ok = unsafe {
                ConvertStringSecurityDescriptorToSecurityDescriptorW(
                    sddl.as_ptr(),
                    SDDL_REVISION_1,
                    &mut descriptor,
                    std::ptr::null_mut(),
                )
            };
            if ok == 0 || descriptor.is_null() {
                return Err(std::io::Error::last_os_error());
            }
            Ok(PipeSecurity(descriptor))
        }

        pub(super) fn descriptor(&self) -> PSECURITY_DESCRIPTOR {
            self.0
        }

        /// A pipe instance named `name` with this access; `first` for the first one (which
        /// fails when another process already has a pipe of that name).
        fn create(&self, name: &str, first: bool) -> std::io::Result<NamedPipeServer> {
            let mut attributes = SECURITY_ATTRIBUTES {
                nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
                lpSecurityDescriptor: self.descriptor(),
                bInheritHandle: 0,
            };
            // SAFETY: `attributes` and the descriptor it points to outlive the call, which
            // only reads them.
            unsafe {
                ServerOptions::new()
                    .first_pipe_instance(first)
                    .reject_remote_clients(true)
                    .create_with_security_attributes_raw(name, (&raw mut attributes).cast())
            }
        }
    }

    impl Drop for PipeSecurity {
        fn drop(&mut self) {
            // SAFETY: allocated by ConvertStringSecurityDescriptorToSecurityDescriptorW.
            unsafe { LocalFree(self.0) };
        }
    }

    pub struct Listener {
        name: String,
        security: PipeSecurity,
        next: NamedPipeServer,
    }

    impl Listener {
        pub(super) fn bind(name: &str) -> std::io::Result<Listener> {
            let security = PipeSecurity::new()?;
            let next = security.create(name, true)?;
            Ok(Listener {
                name: name.to_string(),
                security,
                next,
            })
        }

        /// The next client's connection (the second value mirrors `UnixListener::accept`).
        pub async fn accept(&mut self) -> std::io::Result<(NamedPipeServer, ())> {
            self.next.connect().await?;
            let fresh = self.security.create(&self.name, false)?;
            Ok((std::mem::replace(&mut self.next, fresh), ()))
        }
    }

    /// Opens the pipe asking only for what a logged-on user is granted (read, write data), not
    /// `GENERIC_WRITE`, which would include creating an instance and be refused; at
    /// identification level, so the agent learns who asks but cannot act as them.
    fn open(name: &str) -> std::io::Result<NamedPipeClient> {
        let file = std::fs::OpenOptions::new()
            .access_mode(GENERIC_READ | FILE_WRITE_DATA)
            .custom_flags(FILE_FLAG_OVERLAPPED)
            .security_qos_flags(SECURITY_IDENTIFICATION)
            .open(name)?;
        // SAFETY: a pipe handle opened for overlapped I/O, owned by nothing else from here.
        unsafe { NamedPipeClient::from_raw_handle(file.into_raw_handle()) }
    }

    pub(super) async fn connect(name: &str) -> std::io::Result<NamedPipeClient> {
        for _ in 0..50 {
            match open(name) {
                Err(e) if e.raw_os_error() == Some(PIPE_BUSY) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
        open(name)
    }

    #[cfg(test)]
    mod tests {
        use windows_sys::Win32::Foundation::GENERIC_ALL;
        use windows_sys::Win32::Security::Authorization::ConvertSidToStringSidW;
        use windows_sys::Win32::Security::{
            ACCESS_ALLOWED_ACE, ACL, GetAce, GetSecurityDescriptorControl,
            GetSecurityDescriptorDacl, SE_DACL_PROTECTED,
        };

        use super::*;

        /// The DACL's entries as (type, SID string, access mask).
        fn entries(security: &PipeSecurity) -> Vec<(u8, String, u32)> {
            let mut present = 0;
            let mut defaulted = 0;
            let mut acl: *mut ACL = std::ptr::null_mut();
            // SAFETY: out-pointers to locals; the ACL lives inside the descriptor.
            let ok = unsafe {
                GetSecurityDescriptorDacl(
                    security.descriptor(),
                    &mut present,
                    &mut acl,
                    &mut defaulted,
                )
            };
            assert!(ok != 0 && present != 0 && !acl.is_null(), "no DACL");
            // SAFETY: a valid ACL of the descriptor.
            let count = unsafe { (*acl).AceCount };
            (0..u32::from(count))
                .map(|i| {
                    let mut ace: *mut core::ffi::c_void = std::ptr::null_mut();
                    // SAFETY: `i` < AceCount; `ace` points into the ACL.
                    assert_ne!(unsafe { GetAce(acl, i, &mut ace) }, 0);
                    let ace = ace.cast::<ACCESS_ALLOWED_ACE>();
                    // SAFETY: every entry of this DACL is an ACCESS_ALLOWED_ACE (checked by
                    // the caller through its type), its SID starting at `SidStart`.
                    let (kind, mask, sid) = unsafe {
                        (
                            (*ace).Header.AceType,
                            (*ace).Mask,
                            (&raw mut (*ace).SidStart).cast(),
                        )
                    };
                    let mut text: *mut u16 = std::ptr::null_mut();
                    // SAFETY: a valid SID; the string is LocalAlloc'ed and freed below.
                    assert_ne!(unsafe { ConvertSidToStringSidW(sid, &mut text) }, 0);
                    // SAFETY: a NUL-terminated string from ConvertSidToStringSidW.
                    let sid = unsafe {
                        let len = (0..).take_while(|&i| *text.add(i) != 0).count();
                        let sid = String::from_utf16_lossy(std::slice::from_raw_parts(text, len));
                        LocalFree(text.cast());
                        sid
                    };
                    (kind, sid, mask)
                })
                .collect()
        }

        #[test]
        fn the_pipe_lets_in_system_administrators_its_owner_and_logged_on_users_only() {
            let security = PipeSecurity::new().expect("the SDDL parses");
            assert_eq!(
                entries(&security),
                [
                    (0, "S-1-5-18".to_string(), GENERIC_ALL),     // SYSTEM
                    (0, "S-1-5-32-544".to_string(), GENERIC_ALL), // Administrators
                    (0, "S-1-3-4".to_string(), GENERIC_ALL),      // OWNER RIGHTS
                    (0, "S-1-5-4".to_string(), 0x0012_019b),      // INTERACTIVE
                ]
            );
            let mut control = 0u16;
            let mut revision = 0u32;
            // SAFETY: out-pointers to locals.
            let ok = unsafe {
                GetSecurityDescriptorControl(security.descriptor(), &mut control, &mut revision)
            };
            assert_ne!(ok, 0);
            assert_ne!(
                control & SE_DACL_PROTECTED,
                0,
                "no entries inherited from above"
            );
        }

        #[test]
        fn a_users_access_reads_and_writes_but_cannot_make_an_instance() {
            use windows_sys::Win32::Storage::FileSystem::{
                FILE_APPEND_DATA, FILE_GENERIC_READ, FILE_GENERIC_WRITE,
            };
            let users = 0x0012_019b;
            assert_eq!(
                users,
                (FILE_GENERIC_READ | FILE_GENERIC_WRITE) & !FILE_APPEND_DATA
            );
            assert_eq!(users & FILE_WRITE_DATA, FILE_WRITE_DATA);
            // FILE_CREATE_PIPE_INSTANCE is FILE_APPEND_DATA's bit.
            assert_eq!(users & FILE_APPEND_DATA, 0);
        }

        #[tokio::test]
        async fn the_agents_client_reaches_the_pipe_through_its_access() {
            let name = format!(r"\\.\pipe\natter-agent-test-{}", std::process::id());
            let mut listener = Listener::bind(&name).expect("bind the pipe");
            let served = tokio::spawn(async move {
                let (stream, ()) = listener.accept().await.expect("accept");
                super::super::answer(stream, crate::AgentHandle::default()).await;
                // A second instance was made with the same access: a second client gets in.
                let (stream, ()) = listener.accept().await.expect("accept again");
                super::super::answer(stream, crate::AgentHandle::default()).await;
            });
            for _ in 0..2 {
                let answer = super::super::talk(connect(&name).await.expect("connect"))
                    .await
                    .expect("an answer");
                assert_eq!(answer, "failed: the agent is not running");
            }
            served.await.unwrap();
        }
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
