//! What other processes hold: nats-servers on a store directory (read from `/proc`), a taken
//! port, and stopping a process that is not our child.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A process seen in `/proc`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    /// Its command line, arguments joined by spaces (for messages).
    pub command: String,
}

/// The arguments of `pid`, or `None` if it is gone (or a zombie, whose cmdline is empty).
fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    (!args.is_empty()).then_some(args)
}

/// The value of a Go-style flag (`-name v`, `--name v`, `-name=v`, `--name=v`) for any of `names`.
fn flag_value<'a>(args: &'a [String], names: &[&str]) -> Option<&'a str> {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            continue;
        };
        match flag.split_once('=') {
            Some((name, value)) if names.contains(&name) => return Some(value),
            None if names.contains(&flag) => return iter.next().map(String::as_str),
            _ => {}
        }
    }
    None
}

/// `path` as `pid` sees it (relative paths are relative to its working directory), resolved.
fn resolve_for(pid: u32, path: &str) -> Option<PathBuf> {
    let path = Path::new(path);
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::fs::read_link(format!("/proc/{pid}/cwd"))
            .ok()?
            .join(path)
    };
    full.canonicalize().ok()
}

fn is_nats_server(args: &[String]) -> bool {
    Path::new(&args[0])
        .file_name()
        .is_some_and(|name| name.to_string_lossy().starts_with("nats-server"))
}

/// The store directory of a nats-server's command line, resolved; `None` for other programs.
fn store_dir_of(pid: u32, args: &[String]) -> Option<PathBuf> {
    if !is_nats_server(args) {
        return None;
    }
    resolve_for(pid, flag_value(args, &["store_dir", "sd"])?)
}

fn info(pid: u32, args: &[String]) -> ProcessInfo {
    ProcessInfo {
        pid,
        command: args.join(" "),
    }
}

/// Whether `pid` is a nats-server started with exactly this store directory and configuration
/// file: what our node starts, so a pid in our pid file that passes this is our own orphan (and
/// not an unrelated process that reused the pid).
pub fn is_our_server(pid: u32, store_dir: &Path, config: &Path) -> Option<ProcessInfo> {
    let args = cmdline(pid)?;
    let store = store_dir.canonicalize().ok()?;
    let config = config.canonicalize().ok()?;
    let same_config = flag_value(&args, &["c", "config"])
        .and_then(|c| resolve_for(pid, c))
        .is_some_and(|c| c == config);
    (same_config && store_dir_of(pid, &args)? == store).then(|| info(pid, &args))
}

/// Every live nats-server (other than `except`) using `store_dir`.
pub fn servers_on_store(store_dir: &Path, except: Option<u32>) -> Vec<ProcessInfo> {
    let Ok(store) = store_dir.canonicalize() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| Some(*pid) != except)
        .filter_map(|pid| {
            let args = cmdline(pid)?;
            (store_dir_of(pid, &args)? == store).then(|| info(pid, &args))
        })
        .collect()
}

/// Whether nothing listens on the loopback `port` (the embedded server listens there only).
pub fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Whether `pid` still runs (a zombie has finished: it only waits to be reaped).
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Stops a process that is not our child: SIGTERM, then SIGKILL if it is still alive after
/// `grace`. Returns whether it is gone.
pub fn stop_process(pid: u32, grace: Duration) -> bool {
    let target = Pid::from_raw(pid as i32);
    for (signal, wait) in [
        (Signal::SIGTERM, grace),
        (Signal::SIGKILL, Duration::from_secs(2)),
    ] {
        if kill(target, signal).is_err() {
            return !is_alive(pid);
        }
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if !is_alive(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    !is_alive(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn flags_are_read_in_every_go_spelling() {
        for line in [
            "nats-server -c a.conf --store_dir /d",
            "nats-server -c a.conf -sd /d",
            "nats-server -c a.conf --store_dir=/d",
            "nats-server -c a.conf -sd=/d",
        ] {
            let a = args(line);
            assert_eq!(flag_value(&a, &["store_dir", "sd"]), Some("/d"), "{line}");
            assert_eq!(flag_value(&a, &["c", "config"]), Some("a.conf"), "{line}");
        }
        assert_eq!(flag_value(&args("nats-server -js"), &["sd"]), None);
    }

    #[test]
    fn this_process_is_alive_and_a_random_pid_is_not() {
        assert!(is_alive(std::process::id()));
        assert!(!is_alive(u32::MAX / 2));
    }
}
