//! The agent's own key pair: created on first start, kept in a key file only its owner can
//! read, and used to sign the NATS server's nonce at every connect.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Why the key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error(
        "key file {0} is readable by group or others: it holds the machine's secret key; \
         run `chmod 600 {0}` if it is yours, or delete it to enroll anew"
    )]
    TooOpen(PathBuf),
    #[error("key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {0} does not hold a user key seed")]
    NotASeed(PathBuf),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The seed in `path`, creating a new user key pair there on first start.
pub fn load_or_create(path: &Path) -> Result<String, KeyFileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            check_private(path)?;
            let seed = text.trim().to_string();
            match nkeys::KeyPair::from_seed(&seed) {
                Ok(kp) if kp.public_key().starts_with('U') => Ok(seed),
                _ => Err(KeyFileError::NotASeed(path.to_path_buf())),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path),
        Err(e) => Err(io_error(path)(e)),
    }
}

/// The public key of a seed (what the node binds to the machine).
pub fn public_key(seed: &str) -> Option<String> {
    nkeys::KeyPair::from_seed(seed).ok().map(|k| k.public_key())
}

/// Writes a new seed to a private temporary file and renames it into place, so a crash never
/// leaves a half-written or readable key.
fn create(path: &Path) -> Result<String, KeyFileError> {
    let seed = nkeys::KeyPair::new_user()
        .seed()
        .map_err(|_| KeyFileError::NotASeed(path.to_path_buf()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut file| {
        file.write_all(format!("{seed}\n").as_bytes())?;
        file.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error(path)(e));
    }
    tracing::info!(key_file = %path.display(), "created this machine's key pair");
    Ok(seed)
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), KeyFileError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(io_error(path))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen(path.to_path_buf()));
    }
    Ok(())
}

/// On other systems the file's ACL is the installer's business.
#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<(), KeyFileError> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_first_start_creates_a_private_key_that_later_starts_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/agent.nk");
        let seed = load_or_create(&path).expect("created");
        assert!(public_key(&seed).unwrap().starts_with('U'));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create(&path).expect("reused"), seed);
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.nk");
        load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create(&path).unwrap_err();
        assert!(matches!(err, KeyFileError::TooOpen(_)));
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn a_file_without_a_user_seed_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.nk");
        let mut options = std::fs::OpenOptions::new();
        std::os::unix::fs::OpenOptionsExt::mode(options.write(true).create_new(true), 0o600);
        options
            .open(&path)
            .unwrap()
            .write_all(b"agent-secret\n")
            .unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(KeyFileError::NotASeed(_))
        ));
    }
}
