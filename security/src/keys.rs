//! Z85 CURVE key pairs on disk.
//!
//! `keygen` writes `PREFIX.key` (public and secret key, mode 0600) and
//! `PREFIX.pub` (the public key alone, safe to share). A secret key file
//! that others can read is refused: a leaked secret key is an identity
//! anyone can use.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Bytes of a CURVE key; Z85 text is 40 characters.
pub const KEY_BYTES: usize = 32;
/// Characters of a Z85-encoded key.
pub const KEY_Z85_CHARS: usize = 40;
/// Key files larger than this are not key files.
const KEY_FILE_BYTES_MAX: u64 = 4096;

fn no_broker_key(member: Option<u64>) -> String {
    match member {
        Some(id) => format!(
            "--curve-secret-key needs the brokers' public keys: give --broker-public-key, or a public_key for every member in the group file (member {id} has none)"
        ),
        None => "--curve-secret-key needs --broker-public-key (the broker's PREFIX.pub or its 40 Z85 characters)".to_owned(),
    }
}

/// Problems with key files or key text.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("cannot write key file {path}: {error}")]
    Write { path: PathBuf, error: std::io::Error },
    #[error("{what} {path} is readable by others (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions { what: &'static str, path: PathBuf, mode: u32 },
    #[error("{path}: {detail}")]
    Format { path: PathBuf, detail: String },
    #[error("{0:?} is not a Z85 CURVE key (40 characters) nor a readable key file")]
    NotAKey(String),
    #[error("{path} already exists; remove it or choose another --out")]
    Exists { path: PathBuf },
    #[error("libzmq could not generate a key pair: {0}")]
    Generate(zmq::Error),
    #[error("{}", no_broker_key(*.member))]
    NoBrokerKey { member: Option<u64> },
}

/// A CURVE key pair, in binary.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    pub public: [u8; KEY_BYTES],
    pub secret: [u8; KEY_BYTES],
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret key.
        write!(f, "KeyPair {{ public: {} }}", encode(&self.public))
    }
}

impl KeyPair {
    /// A fresh random key pair from libzmq (libsodium).
    pub fn generate() -> Result<KeyPair, zmq::Error> {
        let pair = zmq::CurveKeyPair::new()?;
        Ok(KeyPair { public: pair.public_key, secret: pair.secret_key })
    }

    pub fn public_z85(&self) -> String {
        encode(&self.public)
    }
}

/// Z85 text of a 32-byte key.
pub fn encode(key: &[u8; KEY_BYTES]) -> String {
    zmq::z85_encode(key).expect("32 bytes are a multiple of 4")
}

/// Decodes a Z85 key.
pub fn decode(text: &str) -> Option<[u8; KEY_BYTES]> {
    if text.len() != KEY_Z85_CHARS {
        return None;
    }
    zmq::z85_decode(text).ok()?.try_into().ok()
}

/// The `keygen` command of every binary: a new pair written to
/// `PREFIX.key` and `PREFIX.pub`, and a description of what was written.
pub fn keygen(prefix: &Path) -> Result<String, KeyError> {
    let pair = KeyPair::generate().map_err(KeyError::Generate)?;
    let (secret, public) = write_pair(&pair, prefix)?;
    Ok(format!(
        "secret key: {} (mode 0600; keep it on this host)\npublic key: {} = {}\n",
        secret.display(),
        public.display(),
        pair.public_z85()
    ))
}

/// Writes `PREFIX.key` (mode 0600, created new) and `PREFIX.pub`.
pub fn write_pair(pair: &KeyPair, prefix: &Path) -> Result<(PathBuf, PathBuf), KeyError> {
    let secret_path = with_suffix(prefix, "key");
    let public_path = with_suffix(prefix, "pub");
    for path in [&secret_path, &public_path] {
        if path.exists() {
            return Err(KeyError::Exists { path: path.clone() });
        }
    }
    let secret_text = format!(
        "# orderly CURVE key pair: keep this file secret (mode 0600)\npublic-key {}\nsecret-key {}\n",
        encode(&pair.public),
        encode(&pair.secret)
    );
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |error| KeyError::Write { path, error }
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&secret_path)
        .map_err(write_err(&secret_path))?;
    file.write_all(secret_text.as_bytes()).map_err(write_err(&secret_path))?;
    file.sync_all().map_err(write_err(&secret_path))?;
    std::fs::write(&public_path, format!("{}\n", encode(&pair.public))).map_err(write_err(&public_path))?;
    Ok((secret_path, public_path))
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

fn read_small(path: &Path) -> Result<String, KeyError> {
    let read_err = |error| KeyError::Read { path: path.to_path_buf(), error };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.len() > KEY_FILE_BYTES_MAX {
        return Err(KeyError::Format { path: path.to_path_buf(), detail: "too large for a key file".into() });
    }
    std::fs::read_to_string(path).map_err(read_err)
}

/// Refuses a secret file (`what` names it in the message) that group or
/// others may read: a leaked secret is an identity anyone can use. Shared
/// with the broker's admin token file.
pub fn ensure_private(path: &Path, what: &'static str) -> Result<(), KeyError> {
    let meta = std::fs::metadata(path).map_err(|error| KeyError::Read { path: path.to_path_buf(), error })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions { what, path: path.to_path_buf(), mode });
    }
    Ok(())
}

/// Loads a key pair written by [`write_pair`], refusing a file that group
/// or others may read.
pub fn load_secret(path: &Path) -> Result<KeyPair, KeyError> {
    ensure_private(path, "secret key file")?;
    let text = read_small(path)?;
    let field = |name: &str| -> Result<[u8; KEY_BYTES], KeyError> {
        let value = text
            .lines()
            .find_map(|line| line.trim().strip_prefix(name).map(str::trim))
            .ok_or_else(|| KeyError::Format { path: path.to_path_buf(), detail: format!("no `{name}` line") })?;
        decode(value)
            .ok_or_else(|| KeyError::Format { path: path.to_path_buf(), detail: format!("`{name}` is not a Z85 key") })
    };
    Ok(KeyPair { public: field("public-key")?, secret: field("secret-key")? })
}

/// A public key given as Z85 text or as a file holding it (e.g. `PREFIX.pub`).
pub fn load_public(text_or_path: &str) -> Result<[u8; KEY_BYTES], KeyError> {
    if let Some(key) = decode(text_or_path) {
        return Ok(key);
    }
    let path = Path::new(text_or_path);
    if !path.exists() {
        return Err(KeyError::NotAKey(text_or_path.to_owned()));
    }
    let text = read_small(path)?;
    let line = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).unwrap_or("");
    decode(line).ok_or_else(|| KeyError::Format { path: path.to_path_buf(), detail: "no Z85 public key".into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let pair = KeyPair::generate().unwrap();
        let (secret, public) = write_pair(&pair, &dir.path().join("w1")).unwrap();
        assert_eq!(load_secret(&secret).unwrap(), pair);
        assert_eq!(load_public(public.to_str().unwrap()).unwrap(), pair.public);
        assert_eq!(load_public(&pair.public_z85()).unwrap(), pair.public);
        assert!(matches!(write_pair(&pair, &dir.path().join("w1")), Err(KeyError::Exists { .. })));
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_secret(&secret).unwrap_err();
        assert!(matches!(err, KeyError::Permissions { mode: 0o644, .. }));
        assert!(err.to_string().contains("chmod 600"), "{err}");
        assert!(!format!("{pair:?}").contains(&encode(&pair.secret)));
    }
}

/// The client side of CURVE: our key pair and the broker's public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurveClient {
    pub keys: KeyPair,
    pub server_public: [u8; KEY_BYTES],
}

impl CurveClient {
    /// Loads `--curve-secret-key FILE` and `--broker-public-key KEY|FILE`.
    pub fn load(secret_file: &Path, server_public: &str) -> Result<CurveClient, KeyError> {
        Ok(CurveClient { keys: load_secret(secret_file)?, server_public: load_public(server_public)? })
    }

    /// Loads the client keys towards one broker or a group: `broker_public`
    /// is `--broker-public-key`; `members` (a group's, with each member's
    /// `public_key` from the group file) may stand in for it when every
    /// member has a key of its own.
    /// A missing key is [`KeyError::NoBrokerKey`] (bad usage, for a CLI).
    pub fn load_for(
        secret_file: &Path,
        broker_public: Option<&str>,
        members: &[(u64, Option<&str>)],
    ) -> Result<CurveClient, KeyError> {
        let keys = load_secret(secret_file)?;
        let server_public = match broker_public {
            Some(text) => load_public(text)?,
            None => {
                if let Some((member, _)) = members.iter().find(|(_, key)| key.is_none()) {
                    return Err(KeyError::NoBrokerKey { member: Some(*member) });
                }
                // Never used: every member has its own (`for_member`).
                let first = members.first().and_then(|(_, key)| *key).ok_or(KeyError::NoBrokerKey { member: None })?;
                load_public(first)?
            }
        };
        Ok(CurveClient { keys, server_public })
    }

    /// The same client towards a group member with a key of its own
    /// (`public_key` in the group file: a Z85 key or a file); without one,
    /// towards this client's broker key.
    pub fn for_member(&self, public_key: Option<&str>) -> Result<CurveClient, KeyError> {
        let server_public = match public_key {
            Some(text) => load_public(text)?,
            None => self.server_public,
        };
        Ok(CurveClient { keys: self.keys.clone(), server_public })
    }

    /// Makes `socket` a CURVE client of the broker; call before connect
    /// (libzmq takes the keys at connect: a socket connected to several
    /// brokers may change the server key between connects).
    pub fn apply(&self, socket: &zmq::Socket) -> Result<(), zmq::Error> {
        socket.set_curve_serverkey(&self.server_public)?;
        socket.set_curve_publickey(&self.keys.public)?;
        socket.set_curve_secretkey(&self.keys.secret)
    }
}
