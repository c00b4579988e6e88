//! Who is logged on to a Windows machine, from the WTS API (Remote Desktop Services), which
//! lists every session: the console's and each RDP user's, connected or disconnected.
//!
//! The table the API returns is read into [`WtsRow`]s by [`WtsSessions`] (Windows only), and
//! turned into [`OsSession`]s by [`sessions_from`], a pure function (tested on any OS with
//! recorded tables).

use super::OsSession;

/// One session of the WTS table, as `WTSEnumerateSessionsW` and `WTSQuerySessionInformationW`
/// (`WTSSessionInfo`, and `WTSSessionInfoEx` for the lock) report it.
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
    /// Whether the session's screen is locked (`WTSINFOEX_LEVEL1_W::SessionFlags`).
    pub lock: WtsLock,
}

/// A session's connection state: `WTS_CONNECTSTATE_CLASS`, the API's number as it is (so an
/// unknown one stays itself), with the states' names as constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WtsState(pub i32);

impl WtsState {
    pub const ACTIVE: WtsState = WtsState(0);
    pub const CONNECTED: WtsState = WtsState(1);
    pub const CONNECT_QUERY: WtsState = WtsState(2);
    pub const SHADOW: WtsState = WtsState(3);
    pub const DISCONNECTED: WtsState = WtsState(4);
    pub const IDLE: WtsState = WtsState(5);
    pub const LISTEN: WtsState = WtsState(6);
    pub const RESET: WtsState = WtsState(7);
    pub const DOWN: WtsState = WtsState(8);
    pub const INIT: WtsState = WtsState(9);

    /// States in which a user is logged on: working (`ACTIVE`, `SHADOW`: being watched) or
    /// gone away with the session kept (`DISCONNECTED`). `CONNECTED`/`IDLE` are a logon
    /// screen, the rest listeners and sessions being set up or torn down.
    fn has_user(self) -> bool {
        matches!(
            self,
            WtsState::ACTIVE | WtsState::SHADOW | WtsState::DISCONNECTED
        )
    }

    /// Someone is connected to the session (at its screen or watching it).
    fn connected(self) -> bool {
        matches!(self, WtsState::ACTIVE | WtsState::SHADOW)
    }
}

/// Whether a session's screen is locked, from `WTSSessionInfoEx`'s `SessionFlags`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WtsLock {
    Locked,
    Unlocked,
    /// Windows does not say (a disconnected session, a failed query, an old Windows): the
    /// session's state alone decides, as before the lock was read.
    Unknown,
}

/// `WTS_SESSIONSTATE_LOCK` / `WTS_SESSIONSTATE_UNLOCK` (any other value is
/// `WTS_SESSIONSTATE_UNKNOWN`).
const SESSIONSTATE_LOCK: i32 = 0;
const SESSIONSTATE_UNLOCK: i32 = 1;

impl WtsLock {
    /// From `SessionFlags` on Windows `major.minor`. Windows 7 and Server 2008 R2 (6.1) report
    /// the two flags the other way round (a documented defect), and older ones not at all: the
    /// flags are trusted from Windows 8 / Server 2012 (6.2) on and read as `Unknown` before
    /// (never a wrong "locked"). The agent needs Windows 10 anyway (Rust's std); the check
    /// keeps an odd version answer from inverting the lock.
    pub fn from_flags(flags: i32, (major, minor): (u32, u32)) -> WtsLock {
        if (major, minor) < (6, 2) {
            return WtsLock::Unknown;
        }
        match flags {
            SESSIONSTATE_LOCK => WtsLock::Locked,
            SESSIONSTATE_UNLOCK => WtsLock::Unlocked,
            _ => WtsLock::Unknown,
        }
    }
}

/// FILETIME ticks per second.
const TICKS_PER_SEC: i64 = 10_000_000;

/// The user sessions in `rows`, in the table's order: sessions with a user in a logged-on
/// state, not session 0 (services). Each is named by its session id (`"2"`), which is what
/// the opener needs and the only name a disconnected session keeps. A session is `active` when
/// its state is `ACTIVE`/`SHADOW` and its screen is not locked (a disconnected or locked one
/// is not: it reports at least 600 s idle, as on Linux), `remote` when its WinStation is an
/// RDP one, and its idle time is `now − last_input` when Windows reported a last input.
pub fn sessions_from(rows: &[WtsRow]) -> Vec<OsSession> {
    rows.iter()
        .filter(|r| r.id != 0 && !r.user.trim().is_empty() && r.state.has_user())
        .map(|r| OsSession {
            user: r.user.trim().to_string(),
            session: r.id.to_string(),
            active: r.state.connected() && r.lock != WtsLock::Locked,
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
    use std::sync::OnceLock;

    use windows_sys::Win32::System::RemoteDesktop::{
        WTS_CURRENT_SERVER_HANDLE, WTS_INFO_CLASS, WTS_SESSION_INFOW, WTSActive, WTSDisconnected,
        WTSEnumerateSessionsW, WTSFreeMemory, WTSINFOEXW, WTSINFOW, WTSInit,
        WTSQuerySessionInformationW, WTSSessionInfo, WTSSessionInfoEx, WTSShadow,
    };
    use windows_sys::Win32::System::SystemInformation::{GetVersionExW, OSVERSIONINFOW};

    use super::{WtsLock, WtsRow, WtsState, sessions_from};
    use crate::desktop::{OsSession, SessionSource};

    // The states' numbers are the API's.
    const _: () = assert!(
        WtsState::ACTIVE.0 == WTSActive
            && WtsState::SHADOW.0 == WTSShadow
            && WtsState::DISCONNECTED.0 == WTSDisconnected
            && WtsState::INIT.0 == WTSInit
    );

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

    /// Windows' version as (major, minor), asked once. Without a manifest Windows 8.1 and
    /// later answer 6.2, which is all [`WtsLock::from_flags`] needs to know.
    fn os_version() -> (u32, u32) {
        static VERSION: OnceLock<(u32, u32)> = OnceLock::new();
        *VERSION.get_or_init(|| {
            let mut info = OSVERSIONINFOW {
                dwOSVersionInfoSize: std::mem::size_of::<OSVERSIONINFOW>() as u32,
                ..Default::default()
            };
            // SAFETY: a sized OSVERSIONINFOW owned by this frame.
            if unsafe { GetVersionExW(&mut info) } == 0 {
                return (0, 0); // unknown: the lock reads as unknown
            }
            (info.dwMajorVersion, info.dwMinorVersion)
        })
    }

    /// One piece of a session's information (`class`), read as a `T` (unaligned: the API's
    /// buffer promises nothing); `None` when Windows refuses or answers short.
    fn query<T: Copy>(session: u32, class: WTS_INFO_CLASS) -> Option<T> {
        let mut buf = std::ptr::null_mut();
        let mut bytes = 0u32;
        // SAFETY: out-pointers to locals; on success `buf` holds the answer, freed below.
        let ok = unsafe {
            WTSQuerySessionInformationW(
                WTS_CURRENT_SERVER_HANDLE,
                session,
                class,
                &mut buf,
                &mut bytes,
            )
        };
        if ok == 0 || buf.is_null() {
            return None;
        }
        let value = (bytes as usize >= std::mem::size_of::<T>())
            // SAFETY: the buffer is at least one T long, and T is plain data.
            .then(|| unsafe { std::ptr::read_unaligned(buf.cast::<T>()) });
        // SAFETY: `buf` came from WTSQuerySessionInformationW and is not used after this.
        unsafe { WTSFreeMemory(buf.cast()) };
        value
    }

    /// One session's row; a session that vanished between the calls (or refuses the query)
    /// keeps the list's state and has no user, so it is left out; one whose lock Windows does
    /// not tell has an unknown lock.
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
            state: WtsState(s.State),
            user: String::new(),
            last_input: 0,
            now: 0,
            lock: WtsLock::Unknown,
        };
        let Some(info) = query::<WTSINFOW>(s.SessionId, WTSSessionInfo) else {
            return row;
        };
        row.user = wide(&info.UserName);
        row.last_input = info.LastInputTime;
        row.now = info.CurrentTime;
        if let Some(ex) = query::<WTSINFOEXW>(s.SessionId, WTSSessionInfoEx)
            && ex.Level == 1
        {
            // SAFETY: level 1 is the union's only member.
            let flags = unsafe { ex.Data.WTSInfoExLevel1.SessionFlags };
            row.lock = WtsLock::from_flags(flags, os_version());
        }
        row
    }

    #[cfg(test)]
    mod tests {
        /// The version query works: an NT 6 or later Windows (Windows 10 tells a program
        /// without a manifest 6.2; Wine 8 says 6.1, its default Windows 7, where the lock
        /// flags then read as unknown).
        #[test]
        fn the_windows_version_is_read() {
            let version = super::os_version();
            assert!(version >= (6, 1), "{version:?}");
            let expected = if version >= (6, 2) {
                super::WtsLock::Locked
            } else {
                super::WtsLock::Unknown
            };
            assert_eq!(super::WtsLock::from_flags(0, version), expected);
        }
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
            lock: WtsLock::Unknown,
        }
    }

    /// A terminal server as `query session` shows it: services, an idle console user, two RDP
    /// users, one disconnected user, the RDP listener and a logon screen nobody used yet.
    fn terminal_server() -> Vec<WtsRow> {
        vec![
            row(0, "Services", WtsState::DISCONNECTED, "", None),
            row(1, "Console", WtsState::ACTIVE, "carol", Some(900)),
            row(2, "RDP-Tcp#3", WtsState::ACTIVE, "dave", Some(4)),
            row(3, "RDP-Tcp#7", WtsState::ACTIVE, "erin", Some(0)),
            row(4, "", WtsState::DISCONNECTED, "frank", Some(7200)),
            row(65536, "RDP-Tcp", WtsState::LISTEN, "", None),
            row(5, "RDP-Tcp#9", WtsState::CONNECTED, "", None),
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
        let console = sessions_from(&[
            row(0, "Services", WtsState::DISCONNECTED, "", None),
            row(1, "Console", WtsState::ACTIVE, "carol", None),
        ]);
        assert_eq!(console.len(), 1);
        assert_eq!(console[0].idle_secs, None, "Windows gave no last input");
        assert_eq!(
            crate::desktop::presence_of(&console).user.as_deref(),
            Some("carol")
        );

        let away = sessions_from(&[row(2, "", WtsState::DISCONNECTED, "dave", Some(30))]);
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
        assert!(
            sessions_from(&[
                row(0, "Services", WtsState::DISCONNECTED, "", None),
                row(1, "Console", WtsState::CONNECTED, "", None),
            ])
            .is_empty(),
            "a logon screen is nobody"
        );
        // A clock that went backwards, and an unknown state number.
        let mut skewed = row(1, "Console", WtsState::ACTIVE, "carol", None);
        skewed.last_input = NOW + TICKS_PER_SEC;
        assert_eq!(sessions_from(&[skewed])[0].idle_secs, None);
        // A state number Windows may add one day is nobody's session.
        assert!(sessions_from(&[row(1, "Console", WtsState(42), "carol", None)]).is_empty());
    }

    /// The same console session as `WTSSessionInfoEx` answers it, locked or not; Windows 10's
    /// numbers (`SessionFlags`: 0 locked, 1 unlocked, -1 unknown).
    fn console_with_flags(flags: i32, os: (u32, u32)) -> WtsRow {
        WtsRow {
            lock: WtsLock::from_flags(flags, os),
            ..row(1, "Console", WtsState::ACTIVE, "carol", Some(20))
        }
    }

    const WINDOWS_10: (u32, u32) = (10, 0);

    #[test]
    fn a_locked_session_is_not_active_and_reports_at_least_ten_minutes_idle() {
        let locked = sessions_from(&[console_with_flags(0, WINDOWS_10)]);
        assert!(!locked[0].active, "a locked screen has nobody at it");
        assert_eq!(
            locked[0].idle_secs,
            Some(20),
            "Windows' own idle time stays"
        );
        let presence = crate::desktop::presence_of(&locked);
        assert_eq!(presence.user.as_deref(), Some("carol"));
        assert_eq!(presence.idle_secs, crate::desktop::INACTIVE_IDLE_SECS);

        for (flags, what) in [(1, "unlocked"), (-1, "unknown")] {
            let open = sessions_from(&[console_with_flags(flags, WINDOWS_10)]);
            assert!(open[0].active, "{what}: active");
            assert_eq!(crate::desktop::presence_of(&open).idle_secs, 20, "{what}");
        }
    }

    #[test]
    fn a_locked_user_among_several_is_the_only_inactive_one() {
        let mut table = terminal_server();
        table[2].lock = WtsLock::from_flags(0, WINDOWS_10); // dave locked his RDP session
        table[3].lock = WtsLock::from_flags(1, WINDOWS_10);
        let presence = crate::desktop::presence_of(&sessions_from(&table));
        let idle: Vec<_> = (presence.users.iter())
            .map(|u| (u.name.as_str(), u.idle_secs))
            .collect();
        assert_eq!(
            idle,
            [
                ("carol", 900),
                ("dave", crate::desktop::INACTIVE_IDLE_SECS),
                ("erin", 0),
                ("frank", 7200),
            ]
        );
    }

    #[test]
    fn the_lock_flags_are_trusted_from_windows_8_on_only() {
        use WtsLock::*;
        for os in [(6, 2), (6, 3), WINDOWS_10] {
            assert_eq!(WtsLock::from_flags(0, os), Locked, "{os:?}");
            assert_eq!(WtsLock::from_flags(1, os), Unlocked, "{os:?}");
            assert_eq!(WtsLock::from_flags(-1, os), Unknown, "{os:?}");
            assert_eq!(WtsLock::from_flags(7, os), Unknown, "{os:?}");
        }
        // Windows 7 / Server 2008 R2 swap the two flags, Vista has none, and a failed version
        // query reads (0, 0): never "locked" there.
        for os in [(6, 1), (6, 0), (0, 0)] {
            for flags in [0, 1, -1] {
                assert_eq!(WtsLock::from_flags(flags, os), Unknown, "{os:?} {flags}");
            }
        }
        let on_windows_7 = sessions_from(&[console_with_flags(1, (6, 1))]);
        assert!(on_windows_7[0].active);
    }
}
