//! Where the CLI's store key comes from: a key file only its user can read, or a passphrase.
//!
//! A phone app gets its key from Android Keystore or iOS Keychain; a laptop has neither, so the
//! CLI keeps the key in a file outside the store: by default `store-<id>.key` under
//! `$XDG_CONFIG_HOME/casenote/keys`, named by the store's id (kept in the clear in the store's
//! key envelope, `casenote_client_core::store::Opening`). So a store is the same store however
//! its path is written and wherever it is moved, and the key never travels with a copy of it.
//! The file is made with mode 0600 for a new store (only `login` makes one), and refused if others
//! can read it. With `--passphrase` the key is derived from a passphrase with Argon2id instead;
//! the passphrase comes from `CASENOTE_PASSPHRASE`, or from a prompt only when there is a
//! terminal: a script never hangs.
//!
//! Stores from before store ids had their key file named by a hash of the store's absolute path.
//! Such a file is found by that name (the path as given, or as the system resolves it), or, for
//! a store moved since, by trying the key files in the keys directory against the store (cheap:
//! no passphrase derivation); once the store has its id, the key file takes the new name.

use anyhow::{bail, Context, Result};
use casenote_client_core::store::{Opening, Unlock};
use casenote_client_core::{Device, Error as CoreError, StoreKey};
use casenote_protocol::limits;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The environment variable a script passes a passphrase in.
pub const PASSPHRASE_ENV: &str = "CASENOTE_PASSPHRASE";

/// Where the key comes from.
enum Source {
    /// `--key-file`.
    File(PathBuf),
    /// `--passphrase`.
    Passphrase(Zeroizing<String>),
    /// The default key file in this keys directory, named by the store's id.
    Default(PathBuf),
}

/// The key of one store, found once the store says which it is.
pub struct Keys {
    store: PathBuf,
    source: Source,
    /// A key file this run made for a new store (removed again if the sign-in fails).
    made: RefCell<Option<PathBuf>>,
    /// A key file from before store ids that opened the store, and its key.
    legacy: RefCell<Option<(PathBuf, StoreKey)>>,
}

impl Keys {
    /// How the key of `store` is found: from a passphrase if asked, else from `key_file`, else
    /// from the default key file. Nothing is read or written until the store is opened.
    pub fn new(store: &Path, key_file: Option<PathBuf>, passphrase: bool) -> Result<Keys> {
        let source = if passphrase {
            Source::Passphrase(read_passphrase()?)
        } else if let Some(file) = key_file {
            Source::File(file)
        } else {
            Source::Default(keys_dir()?)
        };
        Ok(Keys {
            store: store.to_path_buf(),
            source,
            made: RefCell::new(None),
            legacy: RefCell::new(None),
        })
    }

    /// Runs `f` with the way to unlock the store.
    pub fn unlock<T>(&self, f: impl FnOnce(Unlock<'_>) -> T) -> T {
        match &self.source {
            Source::Passphrase(p) => f(Unlock::Passphrase(p)),
            _ => {
                let find = |o: &Opening<'_>| self.find(o).map_err(|e| key_error(&e));
                f(Unlock::Find(&find))
            }
        }
    }

    /// The key of the store `opening` describes (made, for a new store).
    fn find(&self, opening: &Opening<'_>) -> Result<StoreKey> {
        match &self.source {
            Source::File(path) if opening.new && !path.exists() => self.make(path),
            Source::File(path) if !path.exists() => bail!(
                "the key file {} is missing: pass the right --key-file (or CASENOTE_KEY_FILE), \
                 or --passphrase if the store was made with one",
                path.display()
            ),
            Source::File(path) => read_key_file(path),
            Source::Default(dir) => {
                let named = opening.id.map(|id| dir.join(id_file_name(id)));
                match named {
                    Some(path) if opening.new => self.make(&path),
                    Some(path) if path.exists() => read_key_file(&path),
                    _ => self.find_legacy(dir, opening, named.as_deref()),
                }
            }
            Source::Passphrase(_) => unreachable!("a passphrase unlocks without a finder"),
        }
    }

    /// Makes a new store's key and keeps it in `path`.
    fn make(&self, path: &Path) -> Result<StoreKey> {
        let key = StoreKey::generate();
        write_key_file(path, &key)?;
        eprintln!("casenote: new store key written to {}", path.display());
        *self.made.borrow_mut() = Some(path.to_path_buf());
        Ok(key)
    }

    /// The key file of a store from before store ids: by the name its path gave it, or, for a
    /// store moved since, any key file in `dir` that opens it.
    fn find_legacy(
        &self,
        dir: &Path,
        opening: &Opening<'_>,
        named: Option<&Path>,
    ) -> Result<StoreKey> {
        for path in legacy_names(&self.store)
            .into_iter()
            .map(|name| dir.join(name))
        {
            if path.exists() {
                let key = read_key_file(&path)?;
                *self.legacy.borrow_mut() = Some((path, key.clone()));
                return Ok(key);
            }
        }
        let files = std::fs::read_dir(dir).into_iter().flatten().flatten();
        for entry in files.take(limits::DEVICE_KEY_FILES_TRIED_MAX) {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "key") {
                continue;
            }
            if let Ok(key) = read_key_file(&path) {
                if opening.opens(&key) {
                    *self.legacy.borrow_mut() = Some((path, key.clone()));
                    return Ok(key);
                }
            }
        }
        let looked_for =
            named.map_or_else(|| dir.display().to_string(), |p| p.display().to_string());
        bail!(
            "the key file of the device store at {} is missing ({looked_for}): pass the right \
             --key-file (or CASENOTE_KEY_FILE), or --passphrase if the store was made with one",
            self.store.display()
        )
    }

    /// Once the store is open: a key file from before store ids takes the store's id as its
    /// name (written first, then the old one removed).
    pub fn settle(&self, device: &Device) -> Result<()> {
        let (Source::Default(dir), Some(id)) = (&self.source, device.store_id()) else {
            return Ok(());
        };
        let Some((old, key)) = self.legacy.borrow_mut().take() else {
            return Ok(());
        };
        let new = dir.join(id_file_name(id));
        if !new.exists() {
            write_key_file(&new, &key)?;
        }
        let legacy_name = old
            .file_name()
            .is_some_and(|n| !n.to_string_lossy().starts_with(ID_FILE_PREFIX));
        if legacy_name && old != new {
            std::fs::remove_file(&old)
                .with_context(|| format!("cannot remove the old key file {}", old.display()))?;
        }
        eprintln!("casenote: the store's key file is now {}", new.display());
        Ok(())
    }

    /// After a sign-in that failed: removes the key file made for the store it did not create.
    pub fn discard_new(&self) {
        if let Some(path) = self.made.borrow_mut().take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A key finder's failure as client-core carries it: the CLI's own message.
fn key_error(e: &anyhow::Error) -> CoreError {
    CoreError::KeyUnavailable(format!("{e:#}"))
}

const ID_FILE_PREFIX: &str = "store-";

/// The default key file's name for the store with `id`.
fn id_file_name(id: &str) -> String {
    format!("{ID_FILE_PREFIX}{id}.key")
}

/// `$XDG_CONFIG_HOME/casenote/keys`, or under `$HOME/.config` when XDG_CONFIG_HOME is not set.
fn keys_dir() -> Result<PathBuf> {
    let config = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => PathBuf::from(home).join(".config"),
            None => bail!("no HOME or XDG_CONFIG_HOME to keep the store key in: pass --key-file"),
        },
    };
    Ok(config.join("casenote").join("keys"))
}

/// The names a key file from before store ids may have for `store`: a hash of its absolute
/// path, as given (with and without trailing slashes) and as the system resolves it.
fn legacy_names(store: &Path) -> Vec<String> {
    let mut paths = Vec::new();
    if let Ok(p) = std::path::absolute(store) {
        paths.push(p.clone());
        let text = p.as_os_str().to_string_lossy();
        let trimmed = text.trim_end_matches('/');
        if !trimmed.is_empty() && trimmed != text {
            paths.push(PathBuf::from(trimmed));
        }
    }
    if let Ok(p) = std::fs::canonicalize(store) {
        paths.push(p);
    }
    let mut names: Vec<String> = paths
        .iter()
        .map(|p| {
            let digest = Sha256::digest(p.as_os_str().as_encoded_bytes());
            format!("{}.key", hex::encode(&digest[..16]))
        })
        .collect();
    names.dedup();
    names
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
