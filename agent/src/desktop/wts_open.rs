//! Windows: the chat window in the user's own desktop session. The agent runs as a service in
//! session 0, which has no desktop a user sees; it takes the user's token for the chosen
//! session (`WTSQueryUserToken`, which needs the service's SeTcbPrivilege) and starts the
//! default browser there as that user (`CreateProcessAsUserW` of `cmd /c start "" "URL"`, with
//! the user's environment). Run by hand (no such privilege), it opens the browser in its own
//! session instead. Errors carry Windows' own message.
// Windows' process and token API is FFI only.
#![allow(unsafe_code)]

use std::os::windows::process::CommandExt;

use natter_actors::protocol::ChatUser;
use windows_sys::Win32::Foundation::{CloseHandle, ERROR_PRIVILEGE_NOT_HELD, HANDLE};
use windows_sys::Win32::System::Environment::{CreateEnvironmentBlock, DestroyEnvironmentBlock};
use windows_sys::Win32::System::RemoteDesktop::{WTSGetActiveConsoleSessionId, WTSQueryUserToken};
use windows_sys::Win32::System::Threading::{
    CREATE_NO_WINDOW, CREATE_UNICODE_ENVIRONMENT, CreateProcessAsUserW, PROCESS_INFORMATION,
    STARTUPINFOW,
};

use super::SessionSource;
use super::wts::{WtsSessions, browser_command_line};
use crate::Opener;

/// Opens chat windows in users' desktop sessions (`--opener desktop`, the default on Windows).
#[derive(Clone, Copy, Debug, Default)]
pub struct DesktopOpener;

/// The session to open in: the chat user's (its id, as the WTS source names sessions), else
/// the machine's only user's (the first active session), else the console's.
fn target_session(user: Option<&ChatUser>) -> Result<u32, String> {
    if let Some(u) = user {
        return u.session.parse().map_err(|_| {
            format!(
                "session {:?} of {} is not a Windows session id",
                u.session, u.name
            )
        });
    }
    let sessions = WtsSessions.sessions()?;
    let active = (sessions.iter().find(|s| s.active)).or(sessions.first());
    match active.and_then(|s| s.session.parse().ok()) {
        Some(id) => Ok(id),
        // SAFETY: no arguments; returns 0xFFFFFFFF when no console session is attached.
        None => match unsafe { WTSGetActiveConsoleSessionId() } {
            u32::MAX => Err("nobody is logged on".into()),
            id => Ok(id),
        },
    }
}

impl Opener for DesktopOpener {
    fn open(&self, _machine: &str, user: Option<&ChatUser>, url: &str) -> Result<(), String> {
        let line = browser_command_line(url)?;
        let session = target_session(user)?;
        let mut token: HANDLE = std::ptr::null_mut();
        // SAFETY: out-pointer to a local; the token is closed below.
        if unsafe { WTSQueryUserToken(session, &mut token) } == 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() == Some(ERROR_PRIVILEGE_NOT_HELD as i32) {
                // Not a service: the user runs the agent, so their browser is ours to start.
                return open_here(&line);
            }
            return Err(format!("no user token for session {session}: {error}"));
        }
        let result = open_as(token, &line, session);
        // SAFETY: the token came from WTSQueryUserToken and is not used after this.
        unsafe { CloseHandle(token) };
        result
    }
}

/// Starts `line` in this process's own session (the agent run by the logged-on user).
fn open_here(line: &str) -> Result<(), String> {
    let args = line.strip_prefix("cmd.exe ").unwrap_or(line);
    std::process::Command::new("cmd.exe")
        .raw_arg(args)
        .creation_flags(CREATE_NO_WINDOW)
        .stdin(std::process::Stdio::null())
        .spawn()
        .map(|_| ())
        .map_err(|e| format!("could not start the browser: {e}"))
}

/// UTF-16, NUL-terminated.
fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(Some(0)).collect()
}

/// Starts `line` as the owner of `token`, on its session's interactive desktop.
fn open_as(token: HANDLE, line: &str, session: u32) -> Result<(), String> {
    let mut environment = std::ptr::null_mut();
    // SAFETY: out-pointer to a local; the block is destroyed below.
    if unsafe { CreateEnvironmentBlock(&mut environment, token, 0) } == 0 {
        return Err(format!(
            "no environment for the user of session {session}: {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut desktop = wide(r"winsta0\default");
    let mut command = wide(line);
    let startup = STARTUPINFOW {
        cb: std::mem::size_of::<STARTUPINFOW>() as u32,
        lpDesktop: desktop.as_mut_ptr(),
        ..Default::default()
    };
    let mut process = PROCESS_INFORMATION::default();
    // SAFETY: every pointer is to a live local (the command line is mutable, as the API
    // wants); the process and thread handles it returns are closed below.
    let ok = unsafe {
        CreateProcessAsUserW(
            token,
            std::ptr::null(),
            command.as_mut_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            0,
            CREATE_UNICODE_ENVIRONMENT | CREATE_NO_WINDOW,
            environment,
            std::ptr::null(),
            &startup,
            &mut process,
        )
    };
    let error = std::io::Error::last_os_error();
    // SAFETY: the block came from CreateEnvironmentBlock; the handles (when the call
    // succeeded) from CreateProcessAsUserW; none is used after this.
    unsafe {
        DestroyEnvironmentBlock(environment);
        if ok != 0 {
            CloseHandle(process.hProcess);
            CloseHandle(process.hThread);
        }
    }
    if ok == 0 {
        return Err(format!(
            "could not start the browser in session {session}: {error}"
        ));
    }
    Ok(())
}
