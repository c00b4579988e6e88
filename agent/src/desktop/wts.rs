//! Who is logged on to a Windows machine, from the WTS API (Remote Desktop Services), which
//! lists every session: the console's and each RDP user's, connected or disconnected.
//!
//! The table the API returns is read into [`WtsRow`]s by [`WtsSessions`] (Windows only), and
//! turned into [`OsSession`]s by [`sessions_from`], a pure function (tested on any OS with
//! recorded tables).

use super::OsSession;

/// One session of the WTS table, as `WTSEnumerateSessionsW` and `WTSQuerySessionInformationW`
/// (`WTSSessionInfo`) report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WtsRow {
    /// The session id (`0` is the services' session, never a user's).
    pub id: u32,
    /// The WinStation: `Console`, `RDP-Tcp#3`, `Services`, `RDP-Tcp` (the listener); empty
    /// for a disconnected session.
    pub station: String,
    /// `WTS_CONNECTSTATE_CLASS`.
    pub state: WtsState,
    /// The logged-on user's name (`UserName`), empty when nobody is.
    pub user: String,
    /// `LastInputTime` as a FILETIME (100 ns ticks since 1601); 0 when Windows does not know
    /// (it reports it for remote sessions; the console often has 0).
    pub last_input: i64,
    /// `CurrentTime` (FILETIME) of the same answer, what `last_input` is measured against.
    pub now: i64,
}

/// A session's connection state (`WTS_CONNECTSTATE_CLASS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WtsState {
    Active,
    Connected,
    ConnectQuery,
    Shadow,
    Disconnected,
    Idle,
    Listen,
    Reset,
    Down,
    Init,
}

impl WtsState {
    /// From the API's number; unknown numbers read as `Down` (not a user's session).
    pub fn from_raw(raw: i32) -> WtsState {
        use WtsState::*;
        [
            Active,
            Connected,
            ConnectQuery,
            Shadow,
            Disconnected,
            Idle,
            Listen,
            Reset,
            Down,
            Init,
        ]
        .get(usize::try_from(raw).unwrap_or(usize::MAX))
        .copied()
        .unwrap_or(Down)
    }

    /// States in which a user is logged on: working (`Active`, `Shadow`: being watched) or
    /// gone away with the session kept (`Disconnected`). `Connected`/`Idle` are a logon screen,
    /// the rest listeners and sessions being set up or torn down.
    fn has_user(self) -> bool {
        matches!(
            self,
            WtsState::Active | WtsState::Shadow | WtsState::Disconnected
        )
    }
}

/// FILETIME ticks per second.
const TICKS_PER_SEC: i64 = 10_000_000;

/// The user sessions in `rows`, in the table's order: sessions with a user in a logged-on
/// state, not session 0 (services). Each is named by its session id (`"2"`), which is what
/// the opener needs and the only name a disconnected session keeps. A session is `active` when
/// its state is `Active`/`Shadow` (a disconnected one is not), `remote` when its WinStation is
/// an RDP one, and its idle time is `now − last_input` when Windows reported a last input.
pub fn sessions_from(rows: &[WtsRow]) -> Vec<OsSession> {
    rows.iter()
        .filter(|r| r.id != 0 && !r.user.trim().is_empty() && r.state.has_user())
        .map(|r| OsSession {
            user: r.user.trim().to_string(),
            session: r.id.to_string(),
            active: matches!(r.state, WtsState::Active | WtsState::Shadow),
            idle_secs: (r.last_input > 0 && r.now >= r.last_input)
                .then(|| ((r.now - r.last_input) / TICKS_PER_SEC) as u64),
            remote: r.station.to_ascii_lowercase().starts_with("rdp"),
        })
        .collect()
}

/// The command line that opens `url` in the default browser (`--opener desktop`). `cmd.exe`
/// would expand `%…%` even inside quotes, and a `"` would end the argument: chat links never
/// hold either, so a link with them (or control characters) is refused rather than mangled.
pub fn browser_command_line(url: &str) -> Result<String, String> {
    if url
        .chars()
        .any(|c| matches!(c, '"' | '%') || c.is_control())
    {
        return Err(format!(
            "refusing to open a link with '\"', '%' or control characters: {url}"
        ));
    }
    Ok(format!(r#"cmd.exe /d /c start "" "{url}""#))
}

#[cfg(windows)]
pub use windows::WtsSessions;

/// The FFI: the one place of the WTS source that needs `unsafe`.
#[cfg(windows)]
#[allow(unsafe_code)]
mod windows {
    use windows_sys::Win32::System::RemoteDesktop::{
        WTS_CURRENT_SERVER_HANDLE, WTS_SESSION_INFOW, WTSEnumerateSessionsW, WTSFreeMemory,
        WTSINFOW, WTSQuerySessionInformationW, WTSSessionInfo,
    };

    use super::{WtsRow, WtsState, sessions_from};
    use crate::desktop::{OsSession, SessionSource};

    /// The local machine's sessions, from the WTS API.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct WtsSessions;

    impl SessionSource for WtsSessions {
        fn sessions(&self) -> Result<Vec<OsSession>, String> {
            Ok(sessions_from(&table()?))
        }
    }

    /// A NUL-terminated (or full) UTF-16 buffer as a string.
    fn wide(buf: &[u16]) -> String {
        let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
        String::from_utf16_lossy(&buf[..end])
    }

    /// The WTS table: every session, with its user and times where Windows gives them.
    pub(super) fn table() -> Result<Vec<WtsRow>, String> {
        let mut list: *mut WTS_SESSION_INFOW = std::ptr::null_mut();
        let mut count = 0u32;
        // SAFETY: out-pointers to locals; on success `list` holds `count` entries, freed below.
        let ok = unsafe {
            WTSEnumerateSessionsW(WTS_CURRENT_SERVER_HANDLE, 0, 1, &mut list, &mut count)
        };
        if ok == 0 {
            return Err(format!(
                "WTSEnumerateSessionsW: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: the API returned `count` entries at `list` (non-null on success).
        let sessions = unsafe { std::slice::from_raw_parts(list, count as usize) };
        let rows = sessions.iter().map(row).collect();
        // SAFETY: `list` came from WTSEnumerateSessionsW and is not used after this.
        unsafe { WTSFreeMemory(list.cast()) };
        Ok(rows)
    }

    /// One session's row; a session that vanished between the two calls (or refuses the
    /// query) keeps the list's state and has no user, so it is left out.
    fn row(s: &WTS_SESSION_INFOW) -> WtsRow {
        let station = if s.pWinStationName.is_null() {
            String::new()
        } else {
            // SAFETY: a NUL-terminated string owned by the list, alive while it is.
            unsafe {
                let len = (0..)
                    .take_while(|&i| *s.pWinStationName.add(i) != 0)
                    .count();
                String::from_utf16_lossy(std::slice::from_raw_parts(s.pWinStationName, len))
            }
        };
        let mut row = WtsRow {
            id: s.SessionId,
            station,
            state: WtsState::from_raw(s.State),
            user: String::new(),
            last_input: 0,
            now: 0,
        };
        let mut buf = std::ptr::null_mut();
        let mut bytes = 0u32;
        // SAFETY: out-pointers to locals; on success `buf` holds one WTSINFOW, freed below.
        let ok = unsafe {
            WTSQuerySessionInformationW(
                WTS_CURRENT_SERVER_HANDLE,
                s.SessionId,
                WTSSessionInfo,
                &mut buf,
                &mut bytes,
            )
        };
        if ok == 0 || buf.is_null() {
            return row;
        }
        if bytes as usize >= std::mem::size_of::<WTSINFOW>() {
            // SAFETY: the buffer is at least one WTSINFOW long; read unaligned to be safe.
            let info = unsafe { std::ptr::read_unaligned(buf.cast::<WTSINFOW>()) };
            row.user = wide(&info.UserName);
            row.last_input = info.LastInputTime;
            row.now = info.CurrentTime;
        }
        // SAFETY: `buf` came from WTSQuerySessionInformationW and is not used after this.
        unsafe { WTSFreeMemory(buf.cast()) };
        row
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-02 10:00:00 UTC as a FILETIME.
    const NOW: i64 = 134_406_792_000_000_000;

    fn row(id: u32, station: &str, state: WtsState, user: &str, idle_secs: Option<i64>) -> WtsRow {
        WtsRow {
            id,
            station: station.into(),
            state,
            user: user.into(),
            last_input: idle_secs.map_or(0, |s| NOW - s * TICKS_PER_SEC),
            now: NOW,
        }
    }

    /// A terminal server as `query session` shows it: services, an idle console user, two RDP
    /// users, one disconnected user, the RDP listener and a logon screen nobody used yet.
    fn terminal_server() -> Vec<WtsRow> {
        use WtsState::*;
        vec![
            row(0, "Services", Disconnected, "", None),
            row(1, "Console", Active, "carol", Some(900)),
            row(2, "RDP-Tcp#3", Active, "dave", Some(4)),
            row(3, "RDP-Tcp#7", Active, "erin", Some(0)),
            row(4, "", Disconnected, "frank", Some(7200)),
            row(65536, "RDP-Tcp", Listen, "", None),
            row(5, "RDP-Tcp#9", Connected, "", None),
        ]
    }

    #[test]
    fn a_terminal_server_lists_every_user_session_and_skips_the_rest() {
        let sessions = sessions_from(&terminal_server());
        let seen: Vec<_> = (sessions.iter())
            .map(|s| {
                (
                    s.user.as_str(),
                    s.session.as_str(),
                    s.active,
                    s.idle_secs,
                    s.remote,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("carol", "1", true, Some(900), false),
                ("dave", "2", true, Some(4), true),
                ("erin", "3", true, Some(0), true),
                ("frank", "4", false, Some(7200), false),
            ]
        );
    }

    #[test]
    fn an_idle_console_reports_its_idle_time_and_users_through_presence() {
        let sessions = sessions_from(&terminal_server());
        let presence = crate::desktop::presence_of(&sessions);
        let users: Vec<_> = (presence.users.iter())
            .map(|u| (u.name.as_str(), u.session.as_str(), u.idle_secs))
            .collect();
        assert_eq!(
            users,
            [
                ("carol", "1", 900),
                ("dave", "2", 4),
                ("erin", "3", 0),
                // Disconnected: at least the "inactive" idle time.
                ("frank", "4", 7200),
            ]
        );
    }

    #[test]
    fn a_console_without_last_input_and_a_disconnected_user_alone() {
        use WtsState::*;
        let console = sessions_from(&[
            row(0, "Services", Disconnected, "", None),
            row(1, "Console", Active, "carol", None),
        ]);
        assert_eq!(console.len(), 1);
        assert_eq!(console[0].idle_secs, None, "Windows gave no last input");
        assert_eq!(
            crate::desktop::presence_of(&console).user.as_deref(),
            Some("carol")
        );

        let away = sessions_from(&[row(2, "", Disconnected, "dave", Some(30))]);
        let presence = crate::desktop::presence_of(&away);
        assert_eq!(presence.user.as_deref(), Some("dave"));
        assert_eq!(presence.idle_secs, crate::desktop::INACTIVE_IDLE_SECS);
    }

    #[test]
    fn the_browser_command_line_quotes_the_link_and_refuses_what_cmd_would_mangle() {
        let url = "http://natter.example/m/01JD/#t=abc&x=1";
        assert_eq!(
            browser_command_line(url).unwrap(),
            r#"cmd.exe /d /c start "" "http://natter.example/m/01JD/#t=abc&x=1""#
        );
        for bad in ["http://x/\" & calc", "http://x/%PATH%", "http://x/\nnext"] {
            let err = browser_command_line(bad).unwrap_err();
            assert!(err.contains("refusing to open"), "{err}");
        }
    }

    #[test]
    fn nobody_logged_on_and_odd_answers() {
        use WtsState::*;
        assert!(
            sessions_from(&[
                row(0, "Services", Disconnected, "", None),
                row(1, "Console", Connected, "", None),
            ])
            .is_empty(),
            "a logon screen is nobody"
        );
        // A clock that went backwards, and an unknown state number.
        let mut skewed = row(1, "Console", Active, "carol", None);
        skewed.last_input = NOW + TICKS_PER_SEC;
        assert_eq!(sessions_from(&[skewed])[0].idle_secs, None);
        assert_eq!(WtsState::from_raw(42), Down);
        assert_eq!(WtsState::from_raw(-1), Down);
        assert_eq!(WtsState::from_raw(4), Disconnected);
    }
}
