//! Media files kept beside the store: inbound media downloaded from Meta, and files
//! uploaded in dry run.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::Store;
use crate::whatsapp::client::GraphClients;
use crate::whatsapp::error::Disposition;

/// The directory for media files: `media/` next to the store file.
pub fn media_dir(store_path: &Path) -> PathBuf {
    store_path.parent().unwrap_or(Path::new(".")).join("media")
}

/// A MIME type from a file name's extension (what Meta accepts for documents and media).
pub fn mime_for(filename: &str) -> &'static str {
    let ext = filename.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "pdf" => "application/pdf",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "mp4" => "video/mp4",
        "3gp" => "video/3gpp",
        "ogg" | "opus" => "audio/ogg",
        "mp3" => "audio/mpeg",
        "aac" => "audio/aac",
        "amr" => "audio/amr",
        "txt" => "text/plain",
        "csv" => "text/csv",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xls" => "application/vnd.ms-excel",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "ppt" => "application/vnd.ms-powerpoint",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        _ => "application/octet-stream",
    }
}

/// The file extension to use for a MIME type.
pub fn extension_for(mime: &str) -> &'static str {
    match mime.split(';').next().unwrap_or("").trim() {
        "application/pdf" => "pdf",
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/webp" => "webp",
        "video/mp4" => "mp4",
        "video/3gpp" => "3gp",
        "audio/ogg" => "ogg",
        "audio/mpeg" => "mp3",
        "audio/aac" => "aac",
        "audio/amr" => "amr",
        "text/plain" => "txt",
        _ => "bin",
    }
}

/// Keeps a file uploaded in dry run and returns a local media id (`local:<sha256 prefix>`).
pub fn save_local(store_path: &Path, filename: &str, bytes: &[u8]) -> std::io::Result<String> {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(bytes));
    let id = format!("local:{}", &digest[..16]);
    let dir = media_dir(store_path).join("uploads");
    std::fs::create_dir_all(&dir)?;
    let safe: String = filename
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || ".-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    // A file name is at most 255 bytes on most file systems: keep the end (the extension).
    let mut start = safe.len().saturating_sub(200);
    while !safe.is_char_boundary(start) {
        start += 1;
    }
    let safe = &safe[start..];
    std::fs::write(dir.join(format!("{}-{safe}", &digest[..16])), bytes)?;
    Ok(id)
}

/// Downloads inbound media (queued durably with their message) into [`media_dir`], and links
/// each file from its message (`media_file`). Retryable failures are tried again after a
/// pause; definite ones (too large, unknown media) are logged and dropped.
pub struct MediaDownloader {
    /// The store.
    pub store: Store,
    /// The Graph API clients; a file is downloaded through the number that received it.
    pub clients: Arc<GraphClients>,
    /// The store file, whose directory holds `media/`.
    pub store_path: PathBuf,
    /// Largest file kept.
    pub max_bytes: u64,
    /// Notified when new inbound messages were stored.
    pub wake: Arc<Notify>,
    /// Stops the task.
    pub shutdown: CancellationToken,
}

impl MediaDownloader {
    /// Downloads until shutdown.
    pub async fn run(self) {
        let dir = media_dir(&self.store_path);
        loop {
            let pending = self.store.blocking(|s| s.media_pending(32)).await.unwrap_or_default();
            let mut retry_later = false;
            for crate::store::PendingMedia {
                message_id,
                media_id,
                phone_number_id,
            } in pending
            {
                if self.shutdown.is_cancelled() {
                    return;
                }
                // A number no longer configured: its token may still be the default's.
                let client = self
                    .clients
                    .for_number(phone_number_id.as_deref())
                    .unwrap_or(self.clients.default_client());
                let outcome = match client.download_media(&media_id, self.max_bytes).await {
                    Ok(media) => {
                        let name = format!("{message_id}.{}", extension_for(&media.mime_type));
                        let saved = tokio::fs::create_dir_all(&dir)
                            .await
                            .and(tokio::fs::write(dir.join(&name), &media.bytes).await);
                        match saved {
                            Ok(()) => {
                                tracing::info!(message_id = message_id, media = %media_id, bytes = media.bytes.len(), file = %name, "inbound media saved");
                                Some(Some(format!("media/{name}")))
                            }
                            Err(e) => {
                                tracing::error!(message_id = message_id, error = %e, "cannot write media file");
                                None
                            }
                        }
                    }
                    Err(f) if f.disposition == Disposition::Retry => {
                        tracing::warn!(message_id = message_id, media = %media_id, error = %f, "media download failed; will retry");
                        None
                    }
                    Err(f) => {
                        tracing::warn!(message_id = message_id, media = %media_id, error = %f, "media not downloaded");
                        Some(None)
                    }
                };
                match outcome {
                    Some(file) => {
                        if let Err(e) = self.store.blocking(move |s| s.media_done(message_id, file)).await {
                            tracing::error!(message_id = message_id, error = %e, "cannot record media download");
                        }
                    }
                    None => retry_later = true,
                }
            }
            let pause = if retry_later {
                Duration::from_secs(30)
            } else {
                Duration::from_secs(3600)
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }
}
