//! Screenshots kept for `response_format=url` links, in the store (so a link made through one
//! gateway opens through every replica): written when taken, read back by the account that
//! took them only, dropped after [`KEEP`]. File names are checked before anything is looked up.

use std::sync::Arc;
use std::time::Duration;

use crate::action::ImageFormat;
use crate::store::{Kept, Store, StoreError};

/// How long a kept screenshot can be fetched.
pub const KEEP: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("no such screenshot")]
    Missing,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Storage {
    store: Arc<dyn Store>,
}

impl Storage {
    pub fn new(store: Arc<dyn Store>) -> Storage {
        Storage { store }
    }

    /// Keeps a screenshot `id` (hex) taken on a desktop of `account` in workspace `project`;
    /// answers its path in links (`screenshots/ID.EXT`).
    pub async fn keep(
        &self,
        account: &str,
        project: &str,
        id: &str,
        format: ImageFormat,
        bytes: &[u8],
    ) -> Result<String, StorageError> {
        let kept = Kept {
            format: format.extension().to_string(),
            bytes: bytes.to_vec(),
            project_id: Some(project.to_string()),
        };
        self.store.keep_screenshot(account, id, &kept).await?;
        Ok(format!("screenshots/{id}.{}", format.extension()))
    }

    /// A kept screenshot of `account` by file name (`ID.EXT`), with its format (its bytes and
    /// workspace in the `Kept`).
    pub async fn read(&self, account: &str, file: &str) -> Result<(ImageFormat, Kept), StorageError> {
        let (stem, ext) = file.rsplit_once('.').unwrap_or((file, ""));
        let format = match ext {
            "jpg" => ImageFormat::Jpeg,
            "png" => ImageFormat::Png,
            _ => return Err(StorageError::Missing),
        };
        if stem.is_empty() || !stem.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(StorageError::Missing);
        }
        match self.store.screenshot(account, stem).await? {
            Some(kept) if kept.format == ext => Ok((format, kept)),
            _ => Err(StorageError::Missing),
        }
    }

    /// Drops screenshots older than [`KEEP`]; answers how many.
    pub async fn forget_old(&self) -> Result<u64, StorageError> {
        let before = crate::store::now() - KEEP.as_secs() as i64;
        Ok(self.store.forget_screenshots(before).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn kept_screenshots_are_read_by_their_account_and_names_are_checked() {
        let dir = std::env::temp_dir().join(format!("orgo-storage-{}", std::process::id()));
        let store = crate::store::Sqlite::open(&dir.join("gateway.db")).unwrap();
        let storage = Storage::new(Arc::new(store));
        let path = storage
            .keep("acct", "ws", "00ff", ImageFormat::Png, b"png")
            .await
            .unwrap();
        assert_eq!(path, "screenshots/00ff.png");
        let (format, kept) = storage.read("acct", "00ff.png").await.unwrap();
        assert_eq!(
            (format, kept.bytes, kept.project_id),
            (ImageFormat::Png, b"png".to_vec(), Some("ws".to_string()))
        );
        for (account, file) in [
            ("other", "00ff.png"),
            ("acct", "00ff.jpg"),
            ("acct", "../00ff.png"),
            ("acct", ".png"),
            ("acct", "00ff.gif"),
        ] {
            assert!(
                matches!(storage.read(account, file).await, Err(StorageError::Missing)),
                "{account} {file}"
            );
        }
        assert_eq!(storage.forget_old().await.unwrap(), 0, "a fresh one is kept");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
