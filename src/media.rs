//! Media files kept beside the store: inbound media downloaded from Meta, and files
//! uploaded in dry run.

use std::path::{Path, PathBuf};

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
        .map(|c| if c.is_alphanumeric() || ".-_".contains(c) { c } else { '_' })
        .collect();
    std::fs::write(dir.join(format!("{}-{safe}", &digest[..16])), bytes)?;
    Ok(id)
}
