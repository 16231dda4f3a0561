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

/// What a token file lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenFileRole {
    /// Every command against the control plane (`--token-file`).
    Operator,
    /// Joining one host (`standby join --join-token`).
    Join,
}

/// A token file: what an operator (`--control URL --token-file FILE`) or a
/// joining host (`--join-token FILE`) needs, in one file readable by its
/// user only: the token, the CA to check the control plane by (so no first
/// connection is ever trusted blindly), the control plane's site, and when
/// the token expires.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TokenFile {
    pub version: u32,
    pub role: TokenFileRole,
    pub control_site: String,
    token: String,
    pub ca_pem: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

impl TokenFile {
    pub fn new(
        role: TokenFileRole,
        token: &Token,
        control_site: &str,
        ca_pem: &str,
        expires: Option<jiff::Timestamp>,
    ) -> TokenFile {
        TokenFile {
            version: 1,
            role,
            control_site: control_site.into(),
            token: token.secret().into(),
            ca_pem: ca_pem.into(),
            expires: expires.map(|at| at.to_string()),
        }
    }

    pub fn token(&self) -> Result<Token, String> {
        Token::parse(&self.token)
    }

    pub fn write_file(&self, path: &Path) -> Result<(), LinkError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| LinkError::Tls(format!("token file: {e}")))?;
        crate::identity::write_new(path, &format!("{text}\n"))
    }

    /// The token file in `path` of `role`, with errors that name the file.
    pub fn read_file(path: &Path, role: TokenFileRole) -> Result<TokenFile, String> {
        let what = match role {
            TokenFileRole::Operator => "an operator token file (DIR/admin.token of standby init --site)",
            TokenFileRole::Join => "a join token file (DIR/join.token of standby init --site)",
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
        let file: TokenFile = serde_json::from_str(&text).map_err(|_| format!("{} is not {what}", path.display()))?;
        if file.version != 1 {
            return Err(format!(
                "{}: token file version {} is not one this standby reads",
                path.display(),
                file.version
            ));
        }
        if file.role != role {
            return Err(format!("{} is not {what}", path.display()));
        }
        file.token().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(file)
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
