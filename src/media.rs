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

/// Why Meta's servers could not fetch `url`: its host is `localhost`, a loopback, private,
/// link-local or unspecified address, or a name that resolves only to such addresses (the
/// Odoo module's advice: upload the file instead). `None` when it looks public, or when the
/// name does not resolve within 2 s (Meta will try, and say so).
pub fn private_link(url: &str) -> Option<String> {
    use std::net::{IpAddr, ToSocketAddrs};
    let parsed = url::Url::parse(url).ok()?;
    let private = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified() || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_loopback() || v4.is_private())
        }
    };
    match parsed.host()? {
        url::Host::Ipv4(ip) => private(IpAddr::V4(ip)).then(|| ip.to_string()),
        url::Host::Ipv6(ip) => private(IpAddr::V6(ip)).then(|| ip.to_string()),
        url::Host::Domain(name) => {
            let lower = name.to_ascii_lowercase();
            if lower == "localhost" || lower.ends_with(".localhost") {
                return Some(lower);
            }
            let port = parsed.port_or_known_default().unwrap_or(443);
            let target = format!("{lower}:{port}");
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(target.to_socket_addrs().map(|a| a.map(|s| s.ip()).collect::<Vec<_>>()));
            });
            match rx.recv_timeout(std::time::Duration::from_secs(2)) {
                Ok(Ok(ips)) if !ips.is_empty() && ips.iter().all(|ip| private(*ip)) => {
                    Some(format!("{lower} ({})", ips[0]))
                }
                _ => None,
            }
        }
    }
}

/// Every `link` string of a Graph API message body (media, headers, template parameters).
pub fn links_of(body: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("link", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(body, &mut out);
    out
}

#[cfg(test)]
mod link_tests {
    use super::*;

    #[test]
    fn links_meta_cannot_fetch_are_found() {
        for url in [
            "http://localhost:8069/web/content/42",
            "https://odoo.localhost/f.pdf",
            "http://127.0.0.1/x.jpg",
            "http://10.0.0.5/x.jpg",
            "http://192.168.1.20:8069/report.pdf",
            "http://[::1]/x",
            "http://169.254.1.1/x",
        ] {
            assert!(private_link(url).is_some(), "{url}");
        }
        assert!(private_link("https://8.8.8.8/x.jpg").is_none());
        let body = serde_json::json!({"type": "template", "template": {"components": [{"parameters": [{"document": {"link": "http://127.0.0.1/f.pdf"}}]}]}, "image": {"link": "https://x.sn/a.jpg"}});
        let mut links = links_of(&body);
        links.sort();
        assert_eq!(links, ["http://127.0.0.1/f.pdf", "https://x.sn/a.jpg"]);
    }
}
