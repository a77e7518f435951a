//! Tokens for one desktop: short-lived, signed grants to watch (or also drive) it in the
//! browser (viewer tokens, the live view's), so the API key never reaches a page, or to make
//! its gRPC `orgo.agent.v1.Agent` calls in place of the API key (desktop tokens); and download
//! links of workspace files. A token is `<computer>.<account>.<mode>.<expiry>[.<workspace>].<mac>`,
//! HMAC-SHA256 under a secret kept in the store; nothing is stored per token, and a token
//! survives a gateway restart until it expires. A computer's token names the workspace it was
//! in, and opens it no more once it has moved to another (a link handed out under a
//! workspace-scoped key must not follow the computer out of that workspace).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;

use crate::store::{Store, StoreError};

/// Why a token opens nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("invalid token")]
    Invalid,
    #[error("this token has expired; create a new one")]
    Expired,
    #[error("this token was made before its computer moved to another workspace; create a new one")]
    Moved,
}

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Watch only; input is refused.
    View,
    /// Watch and drive the mouse and keyboard.
    Control,
    /// Every `orgo.agent.v1.Agent` call over gRPC (runs included); not the live view.
    Desktop,
    /// Reading one workspace file (the grant's `computer` names the file): a download link.
    Download,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::View => "view",
            Mode::Control => "control",
            Mode::Desktop => "desktop",
            Mode::Download => "download",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "view" => Some(Mode::View),
            "control" => Some(Mode::Control),
            "desktop" => Some(Mode::Desktop),
            "download" => Some(Mode::Download),
            _ => None,
        }
    }
}

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The computer it opens (the stored file, for [`Mode::Download`]).
    pub computer: String,
    pub account: String,
    pub mode: Mode,
    /// Unix seconds.
    pub expires_at: i64,
    /// The workspace the computer was in when the token was made; None for a download link
    /// (and for tokens made before tokens said it).
    pub workspace: Option<String>,
}

impl Grant {
    /// Whether the grant still opens a computer that is now in `workspace`.
    pub fn still_in(&self, workspace: &str) -> Result<(), TokenError> {
        match &self.workspace {
            Some(w) if w != workspace => Err(TokenError::Moved),
            _ => Ok(()),
        }
    }
}

pub struct Signer {
    secret: [u8; 32],
}

impl Signer {
    /// The signer of this installation: its secret is made by whichever gateway asks first
    /// and kept in the store, so a token signed by one replica opens on every other.
    pub async fn open(store: &dyn Store) -> Result<Signer, StoreError> {
        let fresh: [u8; 32] = rand::rng().random();
        let secret = store.secret("viewer-token", &fresh).await?;
        let secret = secret
            .try_into()
            .map_err(|_| StoreError::Database("the viewer-token secret is not 32 bytes".into()))?;
        Ok(Signer { secret })
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(payload.as_bytes());
        mac
    }

    pub fn issue(&self, grant: &Grant) -> String {
        let mut payload = format!(
            "{}.{}.{}.{}",
            grant.computer,
            grant.account,
            grant.mode.as_str(),
            grant.expires_at
        );
        if let Some(workspace) = &grant.workspace {
            payload = format!("{payload}.{workspace}");
        }
        let tag = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        format!("{payload}.{tag}")
    }

    /// The grant of a token that this gateway signed and that has not expired at `now`.
    pub fn verify(&self, token: &str, now: i64) -> Result<Grant, TokenError> {
        let invalid = || TokenError::Invalid;
        if token.len() > 512 {
            return Err(invalid());
        }
        let (payload, tag) = token.rsplit_once('.').ok_or_else(invalid)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| invalid())?;
        self.mac(payload).verify_slice(&tag).map_err(|_| invalid())?;
        let parts: Vec<&str> = payload.splitn(5, '.').collect();
        // Four fields, and the workspace after them when the token names one.
        let (fixed, workspace) = match parts.as_slice() {
            [fixed @ .., workspace] if fixed.len() == 4 => (fixed, Some(workspace.to_string())),
            fixed => (fixed, None),
        };
        let &[computer, account, mode, expires_at] = fixed else {
            return Err(invalid());
        };
        let grant = Grant {
            computer: computer.to_string(),
            account: account.to_string(),
            mode: Mode::parse(mode).ok_or_else(invalid)?,
            expires_at: expires_at.parse().map_err(|_| invalid())?,
            workspace,
        };
        if grant.expires_at <= now {
            return Err(TokenError::Expired);
        }
        Ok(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer { secret: [7; 32] }
    }

    fn grant() -> Grant {
        Grant {
            computer: "c0ffee".into(),
            account: "acc1".into(),
            mode: Mode::View,
            expires_at: 1000,
            workspace: Some("ws1".into()),
        }
    }

    #[test]
    fn issued_tokens_verify_until_they_expire() {
        let token = signer().issue(&grant());
        assert_eq!(signer().verify(&token, 999).unwrap(), grant());
        let expired = signer().verify(&token, 1000).unwrap_err();
        assert!(expired.to_string().contains("expired"));
    }

    #[test]
    fn altered_or_foreign_tokens_are_refused() {
        let token = signer().issue(&grant());
        let other = Signer { secret: [8; 32] };
        assert!(other.verify(&token, 0).is_err(), "another gateway's secret");
        let upgraded = token.replacen(".view.", ".control.", 1);
        assert!(signer().verify(&upgraded, 0).is_err(), "mode changed");
        let longer = token.replacen(".1000.", ".9999.", 1);
        assert!(signer().verify(&longer, 0).is_err(), "expiry changed");
        let elsewhere = token.replacen(".ws1.", ".ws2.", 1);
        assert!(signer().verify(&elsewhere, 0).is_err(), "workspace changed");
        for junk in ["", ".", "a.b", "x.y.z.w.v", &"a".repeat(600)] {
            assert!(signer().verify(junk, 0).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn a_token_opens_its_computer_only_in_the_workspace_it_was_made_in() {
        let grant = signer().verify(&signer().issue(&grant()), 0).unwrap();
        assert_eq!(grant.still_in("ws1"), Ok(()));
        assert_eq!(grant.still_in("ws2"), Err(TokenError::Moved));
        // A download link, or a token from before tokens named their workspace, names none.
        let unbound = Grant {
            workspace: None,
            ..grant
        };
        let read = signer().verify(&signer().issue(&unbound), 0).unwrap();
        assert_eq!((read.workspace, read.computer), (None, "c0ffee".into()));
    }

    #[tokio::test]
    async fn the_secret_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("orgo-signer-{}", std::process::id()));
        let store = crate::store::Sqlite::open(&dir.join("gateway.db")).unwrap();
        let token = Signer::open(&store).await.unwrap().issue(&grant());
        assert!(Signer::open(&store).await.unwrap().verify(&token, 0).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
