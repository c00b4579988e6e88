//! `natter admin issuer-key` and `natter admin new-callout-seed`: the auth callout issuer key
//! that every node and every nats-server of one deployment must agree on. Nodes sign agents'
//! permissions with the seed; `nats.conf` trusts only the public key
//! (`NATTER_NATS_CALLOUT_ISSUER`), which an external server needs to be given.

use std::path::Path;

use natter::config::Config;
use natter::embedded::DataDir;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The issuer's public key: from the configured seed (`nats.callout_seed` or
/// `NATTER_NATS_CALLOUT_SEED`), else from the seed the embedded mode keeps in
/// `<data_dir>/callout.seed`. Never makes a seed: a key nobody configured is of no use.
pub fn public_key(config: &Config) -> Result<String, BoxError> {
    let configured = config.callout_seed();
    if !configured.is_empty() {
        return public_key_of(&configured)
            .map_err(|e| format!("nats.callout_seed (or NATTER_NATS_CALLOUT_SEED): {e}").into());
    }
    let file = DataDir::callout_seed_file_in(&config.storage.data_dir);
    match std::fs::read_to_string(&file) {
        Ok(seed) => {
            public_key_of(seed.trim()).map_err(|e| format!("{}: {e}", file.display()).into())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(no_seed(&file).into()),
        Err(e) => Err(format!("{}: {e}", file.display()).into()),
    }
}

/// A new issuer seed (an NKey account seed, `SA…`), to share between the nodes of a cluster.
pub fn new_seed() -> String {
    natter_actors::auth_callout::Callout::generate_issuer().0
}

fn public_key_of(seed: &str) -> Result<String, String> {
    let key = nkeys::KeyPair::from_seed(seed).map_err(|e| e.to_string())?;
    match seed.starts_with("SA") {
        true => Ok(key.public_key()),
        false => Err("the issuer seed must be an account seed (it starts with SA)".into()),
    }
}

fn no_seed(file: &Path) -> String {
    format!(
        "no auth callout seed: nats.callout_seed and NATTER_NATS_CALLOUT_SEED are empty and {} \
         does not exist (it is made by the first start of an embedded-mode node); make one \
         with `natter admin new-callout-seed`",
        file.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_key_is_the_seeds_and_a_missing_seed_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::defaults();
        config.storage.data_dir = dir.path().to_path_buf();
        let e = public_key(&config).unwrap_err().to_string();
        assert!(e.contains("new-callout-seed"), "{e}");

        let seed = new_seed();
        let expected = nkeys::KeyPair::from_seed(&seed).unwrap().public_key();
        assert!(expected.starts_with('A'), "{expected}");
        std::fs::write(dir.path().join("callout.seed"), format!("{seed}\n")).unwrap();
        assert_eq!(public_key(&config).unwrap(), expected);

        // A configured seed wins over the data directory's.
        let other = new_seed();
        config.nats.callout_seed = other.clone();
        let other_key = nkeys::KeyPair::from_seed(&other).unwrap().public_key();
        assert_eq!(public_key(&config).unwrap(), other_key);

        config.nats.callout_seed = nkeys::KeyPair::new_user().seed().unwrap();
        let e = public_key(&config).unwrap_err().to_string();
        assert!(e.contains("account seed"), "{e}");
    }
}
