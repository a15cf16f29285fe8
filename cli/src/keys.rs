//! Where the CLI's store key comes from: a key file only its user can read, or a passphrase.
//!
//! A phone app gets its key from Android Keystore or iOS Keychain; a laptop has neither, so the
//! CLI keeps the key in a file outside the store (by default under `$XDG_CONFIG_HOME/casenote/keys`,
//! named by a hash of the store's path, so the key does not travel with a copied store). The file
//! is created with mode 0600 on first use, and refused if others can read it. With `--passphrase`
//! the key is derived from a passphrase with Argon2id instead; the passphrase comes from
//! `CASENOTE_PASSPHRASE`, or from a prompt only when there is a terminal: a script never hangs.

use anyhow::{bail, Context, Result};
use casenote_client_core::StoreKey;
use sha2::{Digest, Sha256};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The environment variable a script passes a passphrase in.
pub const PASSPHRASE_ENV: &str = "CASENOTE_PASSPHRASE";

/// How the store is unlocked.
pub enum KeySource {
    Key(StoreKey),
    Passphrase(Zeroizing<String>),
}

/// Resolves the key for `store`: from a passphrase if asked, else from `key_file` (or the
/// default key file), creating a new key only for a store that does not exist yet.
pub fn resolve(store: &Path, key_file: Option<PathBuf>, passphrase: bool) -> Result<KeySource> {
    if passphrase {
        return Ok(KeySource::Passphrase(read_passphrase()?));
    }
    let path = match key_file {
        Some(p) => p,
        None => default_key_file(store)?,
    };
    if path.exists() {
        return Ok(KeySource::Key(read_key_file(&path)?));
    }
    if store_exists(store) {
        bail!(
            "the device store at {} is encrypted, and its key file {} is missing: pass the right \
             --key-file (or CASENOTE_KEY_FILE), or --passphrase if the store was made with one",
            store.display(),
            path.display()
        );
    }
    let key = StoreKey::generate();
    write_key_file(&path, &key)?;
    eprintln!("casenote: new store key written to {}", path.display());
    Ok(KeySource::Key(key))
}

fn store_exists(store: &Path) -> bool {
    std::fs::read_dir(store).is_ok_and(|mut d| d.next().is_some())
}

/// `$XDG_CONFIG_HOME/casenote/keys/<hash of the store's absolute path>.key`, or under
/// `$HOME/.config` when XDG_CONFIG_HOME is not set.
fn default_key_file(store: &Path) -> Result<PathBuf> {
    let config = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => PathBuf::from(home).join(".config"),
            None => bail!("no HOME or XDG_CONFIG_HOME to keep the store key in: pass --key-file"),
        },
    };
    let absolute = std::path::absolute(store)
        .with_context(|| format!("cannot resolve the store path {}", store.display()))?;
    let digest = Sha256::digest(absolute.as_os_str().as_encoded_bytes());
    Ok(config
        .join("casenote")
        .join("keys")
        .join(format!("{}.key", hex::encode(&digest[..16]))))
}

/// Reads a key file: refused if others can read it or if it is not 64 hex digits.
pub fn read_key_file(path: &Path) -> Result<StoreKey> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("cannot read the key file {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            bail!(
                "the key file {} can be read by other users (mode {:o}): run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            );
        }
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the key file {}", path.display()))?,
    );
    let bytes = Zeroizing::new(hex::decode(text.trim()).map_err(|_| {
        anyhow::anyhow!(
            "the key file {} is not a store key (64 hex digits)",
            path.display()
        )
    })?);
    StoreKey::from_slice(&bytes)
        .with_context(|| format!("the key file {} is not a store key", path.display()))
}

fn write_key_file(path: &Path, key: &StoreKey) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create the key file {}", path.display()))?;
    let text = Zeroizing::new(format!("{}\n", hex::encode(key.as_bytes())));
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

fn read_passphrase() -> Result<Zeroizing<String>> {
    if let Some(p) = std::env::var_os(PASSPHRASE_ENV) {
        return p
            .into_string()
            .map(Zeroizing::new)
            .map_err(|_| anyhow::anyhow!("{PASSPHRASE_ENV} is not valid UTF-8"));
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "--passphrase needs a passphrase: set {PASSPHRASE_ENV} (casenote does not prompt \
             without a terminal)"
        );
    }
    Ok(Zeroizing::new(
        rpassword::prompt_password("store passphrase: ").context("cannot read the passphrase")?,
    ))
}
