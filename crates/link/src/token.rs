//! Bearer tokens: how operators (and a host joining) prove themselves to a
//! control plane. A token is `standby_` and 64 hex digits of the system's
//! random source, kept in a file readable by its user only; the control
//! plane stores its hash, never the token, so a copy of the state cannot
//! be replayed.

use std::path::Path;

use crate::LinkError;

const PREFIX: &str = "standby_";

#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        write!(f, "Token({})", &self.hash()[..12])
    }
}

impl Token {
    /// A new random token.
    pub fn generate() -> Result<Token, LinkError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| LinkError::Tls(format!("reading the system's random source: {e}")))?;
        Ok(Token(format!("{PREFIX}{}", secret.iter().map(|b| format!("{b:02x}")).collect::<String>())))
    }

    /// A token as a client sent it (surrounding white space ignored).
    pub fn parse(text: &str) -> Result<Token, String> {
        let text = text.trim();
        let valid = text.strip_prefix(PREFIX).is_some_and(|hex| {
            hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if valid {
            Ok(Token(text.to_string()))
        } else {
            Err(format!("not a Standby token (they look like {PREFIX} and 64 hex digits)"))
        }
    }

    /// What the control plane keeps to recognise the token.
    pub fn hash(&self) -> String {
        blake3::hash(self.0.as_bytes()).to_hex().to_string()
    }

    /// The token, for an `Authorization: Bearer` header.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// Writes the token to a new file readable by this user only.
    pub fn write_file(&self, path: &Path) -> Result<(), LinkError> {
        crate::identity::write_new(path, &format!("{}\n", self.0))
    }

    /// The token in `path`, with errors that name the file.
    pub fn read_file(path: &Path) -> Result<Token, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
        Token::parse(&text).map_err(|e| format!("token file {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_and_only_tokens_parse() {
        let token = Token::generate().unwrap();
        assert_eq!(Token::parse(&format!("{}\n", token.secret())).unwrap(), token);
        assert_ne!(Token::generate().unwrap(), token);
        for bad in ["", "standby_", "standby_xyz", &token.secret()[1..], &format!("{}0", token.secret())] {
            assert!(Token::parse(bad).is_err(), "{bad}");
        }
        assert!(!format!("{token:?}").contains(&token.secret()[8..]));
    }
}

/// A join token file: what a new host needs to join the deployment, in
/// one file handed to its operator (readable by them only): the token,
/// the CA to check the control plane by (so no first connection is ever
/// trusted blindly), the control plane's site, and when it expires.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct JoinToken {
    pub version: u32,
    pub control_site: String,
    token: String,
    pub ca_pem: String,
    pub expires: String,
}

impl JoinToken {
    pub fn new(token: &Token, control_site: &str, ca_pem: &str, expires: jiff::Timestamp) -> JoinToken {
        JoinToken {
            version: 1,
            control_site: control_site.into(),
            token: token.secret().into(),
            ca_pem: ca_pem.into(),
            expires: expires.to_string(),
        }
    }

    pub fn token(&self) -> Result<Token, String> {
        Token::parse(&self.token)
    }

    pub fn write_file(&self, path: &Path) -> Result<(), LinkError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| LinkError::Tls(format!("join token: {e}")))?;
        crate::identity::write_new(path, &format!("{text}\n"))
    }

    /// The join token in `path`, with errors that name the file.
    pub fn read_file(path: &Path) -> Result<JoinToken, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read join token file {}: {e}", path.display()))?;
        let token: JoinToken = serde_json::from_str(&text)
            .map_err(|_| format!("{} is not a join token file (made by standby init --site)", path.display()))?;
        if token.version != 1 {
            return Err(format!(
                "{}: join token version {} is not one this standby reads",
                path.display(),
                token.version
            ));
        }
        token.token().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(token)
    }
}
