//! The admin bearer token: read from a file only its owner may read, never
//! printed, compared in constant time.

use std::path::Path;

use super::AdminError;

/// Characters of a token at least: short secrets are guessed.
pub const TOKEN_CHARS_MIN: usize = 16;
/// Bytes of a token file at most (a token, a newline, perhaps a comment).
const TOKEN_FILE_BYTES_MAX: u64 = 4096;

/// A secret sent as `Authorization: Bearer <token>`: visible ASCII only,
/// so it fits an HTTP header as it is.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl AdminToken {
    /// Reads `--admin-token FILE`: the first line that is neither empty nor
    /// a `#` comment, trimmed. A file group or others can read is refused,
    /// as a CURVE secret key is.
    pub fn load(path: &Path) -> Result<AdminToken, AdminError> {
        let err = |detail: String| AdminError::Token { path: path.to_path_buf(), detail };
        let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read it: {e}")))?;
        if meta.len() > TOKEN_FILE_BYTES_MAX {
            return Err(err(format!("larger than {TOKEN_FILE_BYTES_MAX} bytes: not a token file")));
        }
        orderly_security::keys::ensure_private(path, "admin token file")?;
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read it: {e}")))?;
        let line = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).unwrap_or("");
        AdminToken::new(line).map_err(err)
    }

    /// Checks a token's text (the one place its rules live).
    pub fn new(text: &str) -> Result<AdminToken, String> {
        if text.len() < TOKEN_CHARS_MIN {
            return Err(format!(
                "the token has {} characters, fewer than {TOKEN_CHARS_MIN} \
                 (make one with `head -c 32 /dev/urandom | base64`)",
                text.len()
            ));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token may hold only visible ASCII characters (no spaces)".into());
        }
        Ok(AdminToken(text.to_owned()))
    }

    /// The `Authorization` header value that carries this token.
    pub fn header_value(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether an `Authorization` header value carries this token. Constant
    /// time in the presented value's content: a timing probe learns nothing
    /// about how much of a guess was right.
    pub fn matches_header(&self, header: &[u8]) -> bool {
        let Some(presented) = header.strip_prefix(b"Bearer ") else { return false };
        constant_time_eq(presented, self.0.as_bytes())
    }
}

/// Equal slices, compared without an early exit. A length difference is
/// answered at once: the length of a token is no secret worth keeping.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn tokens_match_only_exactly() {
        let token = AdminToken::new("0123456789abcdef-token").unwrap();
        assert!(token.matches_header(token.header_value().as_bytes()));
        assert!(!token.matches_header(b"Bearer 0123456789abcdef-tokeN"));
        assert!(!token.matches_header(b"Bearer 0123456789abcdef-token2"));
        assert!(!token.matches_header(b"Basic 0123456789abcdef-token"));
        assert!(!token.matches_header(b""));
        assert!(!format!("{token:?}").contains("0123"));
    }

    #[test]
    fn weak_tokens_are_refused() {
        assert!(AdminToken::new("short").unwrap_err().contains("fewer than 16"));
        assert!(AdminToken::new("has a space in it, sadly").unwrap_err().contains("visible ASCII"));
    }

    #[test]
    fn a_token_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        std::fs::write(&path, "# admin token\n0123456789abcdef-token\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(AdminToken::load(&path).unwrap(), AdminToken::new("0123456789abcdef-token").unwrap());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let error = AdminToken::load(&path).unwrap_err().to_string();
        assert!(error.contains("admin token file") && error.contains("chmod 600"), "{error}");
    }
}
