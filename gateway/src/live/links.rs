//! Viewer links: the live view's URL of a computer with a signed token in its fragment, and
//! the check of a token a page brings back.

use crate::config::Config;
use crate::store::{Computer, now};

use crate::token::{Grant, Mode, Signer, TokenError};

/// What a name escapes in a URL path segment: all but letters, digits, `-`, `_` and `.`.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.');

pub struct Links {
    signer: Signer,
    public_url: String,
    /// How long the link in a computer's `url` opens it, in seconds.
    link_seconds: i64,
}

impl Links {
    pub fn new(signer: Signer, config: &Config) -> Links {
        Links {
            signer,
            public_url: config.public_url(),
            link_seconds: config.viewer_link_seconds,
        }
    }

    /// The live view of a computer, opened with a fresh control token in the link's fragment
    /// (only the owner's authenticated answers carry it).
    pub fn url(&self, computer: &Computer) -> String {
        let grant = Grant {
            computer: computer.id.clone(),
            account: computer.account_id.clone(),
            mode: Mode::Control,
            expires_at: now() + self.link_seconds,
            workspace: Some(computer.project_id.clone()),
        };
        self.viewer_url(computer, &self.signer.issue(&grant))
    }

    /// The live view's page of a computer (its `connection_url`), named by the computer's
    /// name, escaped for a path (a clone's name holds a space and parentheses).
    pub fn page_url(&self, computer: &Computer) -> String {
        let name = percent_encoding::utf8_percent_encode(&computer.name, PATH_SEGMENT);
        format!("{}/desktops/{name}", self.public_url)
    }

    /// The live view of a computer opened with `token`.
    pub fn viewer_url(&self, computer: &Computer, token: &str) -> String {
        format!("{}#token={token}", self.page_url(computer))
    }

    /// A token for `grant`.
    pub fn issue(&self, grant: &Grant) -> String {
        self.signer.issue(grant)
    }

    /// The grant of a token this gateway signed that has not expired.
    pub fn verify(&self, token: &str) -> Result<Grant, TokenError> {
        self.signer.verify(token, now())
    }
}
