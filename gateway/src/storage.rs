//! Screenshots kept for `response_format=url` links, one directory per account under the data
//! dir (`storage/ACCOUNT/screenshots/ID.EXT`): written when taken, read back by the account
//! that took them only. File names are checked before any path is made from them.

use std::path::{Path, PathBuf};

use crate::action::ImageFormat;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("no such screenshot")]
    Missing,
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
}

pub struct Storage {
    root: PathBuf,
}

impl Storage {
    pub fn new(data_dir: &Path) -> Storage {
        Storage {
            root: data_dir.join("storage"),
        }
    }

    fn dir(&self, account: &str) -> PathBuf {
        self.root.join(account).join("screenshots")
    }

    /// Keeps a screenshot `id` (hex) of `account`; answers its path in links
    /// (`screenshots/ID.EXT`).
    pub async fn keep(
        &self,
        account: &str,
        id: &str,
        format: ImageFormat,
        bytes: &[u8],
    ) -> Result<String, StorageError> {
        let dir = self.dir(account);
        tokio::fs::create_dir_all(&dir).await?;
        let file = format!("{id}.{}", format.extension());
        tokio::fs::write(dir.join(&file), bytes).await?;
        Ok(format!("screenshots/{file}"))
    }

    /// A kept screenshot of `account` by file name (`ID.EXT`), with its format.
    pub async fn read(&self, account: &str, file: &str) -> Result<(ImageFormat, Vec<u8>), StorageError> {
        let (stem, ext) = file.rsplit_once('.').unwrap_or((file, ""));
        let format = match ext {
            "jpg" => ImageFormat::Jpeg,
            "png" => ImageFormat::Png,
            _ => return Err(StorageError::Missing),
        };
        if stem.is_empty() || !stem.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(StorageError::Missing);
        }
        match tokio::fs::read(self.dir(account).join(file)).await {
            Ok(bytes) => Ok((format, bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StorageError::Missing),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn kept_screenshots_are_read_by_their_account_and_names_are_checked() {
        let dir = std::env::temp_dir().join(format!("orgo-storage-{}", std::process::id()));
        let storage = Storage::new(&dir);
        let path = storage
            .keep("acct", "00ff", ImageFormat::Png, b"png")
            .await
            .unwrap();
        assert_eq!(path, "screenshots/00ff.png");
        assert_eq!(
            storage.read("acct", "00ff.png").await.unwrap(),
            (ImageFormat::Png, b"png".to_vec())
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
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
