//! [`FakeLoginctl`]: a `loginctl` that answers with recorded text, so the agent's logind source
//! (its real parsing and its real command runner) can be tested on machines without logind and
//! with sessions a test chooses.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A `loginctl` script in a temporary directory. `list-sessions` prints the recorded list;
/// `show-session ID` the recorded properties of `ID`, or fails as loginctl does for a session
/// it does not know.
pub struct FakeLoginctl {
    dir: tempfile::TempDir,
}

impl FakeLoginctl {
    pub fn new() -> FakeLoginctl {
        let dir = tempfile::tempdir().expect("temporary directory");
        // Other users (the session users a test opens windows for) run scripts from here.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let script = format!(
            "#!/bin/sh\n\
             dir='{}'\n\
             case \"$1\" in\n\
             list-sessions) cat \"$dir/list\" ;;\n\
             show-session) if [ -f \"$dir/session-$2\" ]; then cat \"$dir/session-$2\"; \
             else echo \"Failed to get session path: No session '$2' known.\" >&2; exit 1; fi ;;\n\
             *) echo \"Unknown command verb '$1'.\" >&2; exit 1 ;;\n\
             esac\n",
            dir.path().display()
        );
        let fake = FakeLoginctl { dir };
        write_executable(&fake.path(), &script);
        fake.set_sessions(&[]);
        fake
    }

    /// The script, for `--loginctl` / `LogindSessions::new`.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("loginctl")
    }

    /// The directory the script lives in (for other scripts of the test).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// From now on logind knows these sessions: `(id, show-session properties)`.
    pub fn set_sessions(&self, sessions: &[(&str, &str)]) {
        let known: Vec<String> = (sessions.iter())
            .map(|(id, _)| format!("session-{id}"))
            .collect();
        for entry in std::fs::read_dir(self.dir.path())
            .expect("read dir")
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("session-") && !known.contains(&name) {
                std::fs::remove_file(entry.path()).expect("remove a session");
            }
        }
        for (id, properties) in sessions {
            replace(&self.dir.path().join(format!("session-{id}")), properties);
        }
        let list: String = (sessions.iter())
            .map(|(id, properties)| {
                let uid = (properties.lines())
                    .find_map(|l| l.strip_prefix("User="))
                    .unwrap_or("0");
                format!("{id:>7} {uid} x\n")
            })
            .collect();
        replace(&self.dir.path().join("list"), &list);
    }
}

impl Default for FakeLoginctl {
    fn default() -> Self {
        FakeLoginctl::new()
    }
}

/// Properties of a user's desktop session as `loginctl show-session` prints them.
pub fn desktop_session(
    id: &str,
    name: &str,
    uid: u32,
    display: &str,
    idle_since_us: u64,
) -> String {
    let idle = if idle_since_us == 0 { "no" } else { "yes" };
    format!(
        "Id={id}\nName={name}\nUser={uid}\nClass=user\nType=x11\nState=active\nActive=yes\n\
         Remote=no\nIdleHint={idle}\nIdleSinceHint={idle_since_us}\nDisplay={display}\nLeader=1\n"
    )
}

/// Writes `text` to `path` at once (a reader never sees half of it).
fn replace(path: &Path, text: &str) {
    let new = path.with_extension("new");
    std::fs::write(&new, text).expect("write");
    std::fs::rename(&new, path).expect("rename");
}

/// Writes an executable script (mode 755) at once.
pub fn write_executable(path: &Path, script: &str) {
    let new = path.with_extension("new");
    std::fs::write(&new, script).expect("write script");
    std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::rename(&new, path).expect("rename");
}
