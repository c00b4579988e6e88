//! The node's data directory in the embedded mode: one node at a time (a lock), the pid of its
//! nats-server (to find an orphan a crashed older build left), and the auth callout issuer seed.
//!
//! Layout of `<data_dir>`:
//! - `natter.lock`: locked (`flock`) by the node for its whole life; the kernel drops the lock
//!   when the process dies, however it dies, so a crashed node never blocks its successor.
//! - `nats-server.pid`: the pid of the node's current nats-server.
//! - `callout.seed` (mode 0600): the generated auth callout issuer seed, kept across restarts.
//! - `nats/`: the JetStream store; `nats-server.log`; `nats.url` (for admin commands).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{EmbeddedError, NatsServerOptions, procs};

/// How long an orphaned nats-server gets to stop on SIGTERM before it is killed.
const ORPHAN_GRACE: Duration = Duration::from_secs(10);

/// A data directory this process holds (locked) until it is dropped.
pub struct DataDir {
    path: PathBuf,
    /// Holds the lock; closing the file releases it.
    _lock: File,
}

impl DataDir {
    /// Creates `path` if needed and locks it, or says which process holds it.
    pub fn lock(path: &Path) -> Result<DataDir, EmbeddedError> {
        let io_error = |source| EmbeddedError::DataDir {
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(path).map_err(io_error)?;
        let lock_path = path.join("natter.lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_error)?;
        if let Err(e) = file.try_lock() {
            return Err(match e {
                std::fs::TryLockError::WouldBlock => {
                    let mut holder = String::new();
                    let _ = file.read_to_string(&mut holder);
                    EmbeddedError::DataDirInUse {
                        path: path.to_path_buf(),
                        holder: holder.trim().to_string(),
                    }
                }
                std::fs::TryLockError::Error(source) => io_error(source),
            });
        }
        // The holder's pid, for the message a second node prints.
        file.set_len(0).map_err(io_error)?;
        file.write_all(std::process::id().to_string().as_bytes())
            .map_err(io_error)?;
        Ok(DataDir {
            path: path.to_path_buf(),
            _lock: file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the node records its nats-server's pid.
    pub fn server_pid_file(&self) -> PathBuf {
        self.path.join("nats-server.pid")
    }

    /// Stops the nats-server an earlier node on this directory left running (a node killed
    /// before it could stop its child, built without the parent-death signal), so that no two
    /// servers ever open one store. We stop it rather than adopt it: its callout issuer key,
    /// configuration and binary may all differ from ours, and a fresh start recovers the store.
    pub fn stop_orphan(&self, opts: &NatsServerOptions) -> Result<(), EmbeddedError> {
        let pid_file = self.server_pid_file();
        let Ok(text) = std::fs::read_to_string(&pid_file) else {
            return Ok(());
        };
        let orphan = text
            .trim()
            .parse::<u32>()
            .ok()
            .and_then(|pid| procs::is_our_server(pid, &opts.store_dir, &opts.config));
        if let Some(orphan) = orphan {
            tracing::warn!(
                pid = orphan.pid,
                command = %orphan.command,
                "a nats-server left by an earlier run of this node still runs on its store; \
                 stopping it before starting our own"
            );
            if !procs::stop_process(orphan.pid, ORPHAN_GRACE) {
                return Err(EmbeddedError::StoreInUse {
                    store: opts.store_dir.clone(),
                    holder: orphan,
                });
            }
        }
        // Otherwise the pid is stale: that server is gone, or the pid now names another process.
        let _ = std::fs::remove_file(&pid_file);
        Ok(())
    }

    /// The auth callout issuer seed this directory keeps, generated and stored on first use.
    /// Returns (seed, public key).
    pub fn callout_seed(&self) -> Result<(String, String), EmbeddedError> {
        let path = self.callout_seed_file();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                restrict_to_owner(&path)?;
                let seed = text.trim().to_string();
                let key = nkeys::KeyPair::from_seed(&seed)
                    .map_err(|e| EmbeddedError::BadSeed { path, reason: e })?;
                Ok((seed, key.public_key()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (seed, public_key) = natter_actors::auth_callout::Callout::generate_issuer();
                write_private(&path, seed.as_bytes())?;
                tracing::info!(file = %path.display(), "generated the auth callout issuer key");
                Ok((seed, public_key))
            }
            Err(source) => Err(EmbeddedError::DataDir { path, source }),
        }
    }

    /// Where the generated callout seed is kept.
    pub fn callout_seed_file(&self) -> PathBuf {
        Self::callout_seed_file_in(&self.path)
    }

    /// Where the generated callout seed is kept in `data_dir` (also for `check-config`, which
    /// does not lock the directory).
    pub fn callout_seed_file_in(data_dir: &Path) -> PathBuf {
        data_dir.join("callout.seed")
    }
}

/// Tightens a secret file that someone made readable by others back to 0600.
fn restrict_to_owner(path: &Path) -> Result<(), EmbeddedError> {
    let io_error = |source| EmbeddedError::DataDir {
        path: path.to_path_buf(),
        source,
    };
    let mode = std::fs::metadata(path)
        .map_err(io_error)?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(file = %path.display(), "secret file was readable by others; now 0600");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_error)?;
    }
    Ok(())
}

/// Writes `contents` to `path` with mode 0600, atomically: readers see the old file or the whole
/// new one, never a part, and the secret is never readable by others, not even for a moment.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), EmbeddedError> {
    let io_error = |source| EmbeddedError::DataDir {
        path: path.to_path_buf(),
        source,
    };
    let temp = path.with_extension(format!("tmp.{}", std::process::id()));
    // A leftover temp file could have a wider mode: start from a new one.
    let _ = std::fs::remove_file(&temp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(io_error)?;
    file.write_all(contents).map_err(io_error)?;
    file.sync_all().map_err(io_error)?;
    std::fs::rename(&temp, path).map_err(io_error)?;
    // The rename itself must reach the disk, or a crash could bring the old name back.
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error)?;
    }
    Ok(())
}
