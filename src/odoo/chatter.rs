//! The chatter writer: posts the queued notes (`store::chatter`) on their Odoo records as
//! internal notes, so that Odoo e-mails nobody:
//!
//! `execute_kw(model, 'message_post', [[id]], {body, message_type: 'comment',
//! subtype_xmlid: 'mail.mt_note', attachment_ids})`
//!
//! A file is first created as an `ir.attachment` on the record (`datas` in base64) and its id
//! passed; the id is kept on the note, so a retry does not create it twice. A failed post is
//! retried like a hook run (`scripts.retry_first`, doubled, for `scripts.retry_for`), then
//! parked (`/api/parked`, id `chatter:N`, replayed by the operator). Sends never wait for it.
//!
//! If walua dies between Odoo's answer and the removal of the note, the note is posted again
//! at restart: a duplicate note rather than a lost one.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{OdooClient, OdooError};
use crate::store::Store;
use crate::store::chatter::{ChatterNote, failed_id};
use crate::store::parked::{FailedRun, RetryPolicy, RunKind};

/// Notes posted per pass.
const BATCH: usize = 20;
/// How often the queue is looked at when nothing wakes the writer.
const IDLE: Duration = Duration::from_secs(2);

/// The note's HTML: the text escaped, newlines as `<br>`, in one paragraph. A real Odoo 16
/// keeps such a body as sent (its sanitizer parses it as HTML); a newline left as is would show
/// as a space (`tests/fixtures/odoo16/chatter/FINDINGS.md`).
pub fn note_html(text: &str) -> String {
    let body = html_escape::encode_text(text)
        .replace("\r\n", "\n")
        .replace('\n', "<br>");
    format!("<p>{body}</p>")
}

/// Posts the queued notes until shutdown.
#[derive(Clone)]
pub struct ChatterWriter {
    /// Where the notes wait.
    pub store: Store,
    /// Odoo.
    pub odoo: Arc<OdooClient>,
    /// Notified when a note is queued (or replayed).
    pub wake: Arc<Notify>,
    /// How failed posts are retried.
    pub retry: RetryPolicy,
}

impl ChatterWriter {
    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let store = self.store.clone();
            let now = crate::store::now_ms();
            let due = store.blocking(move |s| s.chatter_due(now, BATCH)).await;
            let mut posted_any = false;
            match due {
                Ok(notes) => {
                    for note in notes {
                        if shutdown.is_cancelled() {
                            return;
                        }
                        posted_any |= self.post_one(note).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "chatter: cannot read the queue"),
            }
            if posted_any {
                continue;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(IDLE) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Posts one note; records the outcome. Returns whether it was posted.
    async fn post_one(&self, mut note: ChatterNote) -> bool {
        let id = note.id;
        match self.post(&mut note).await {
            Ok(message_id) => {
                tracing::info!(note = id, model = %note.record.model, record = note.record.id, message_id, "chatter note posted");
                let _ = self.store.blocking(move |s| s.chatter_update(id, None, None)).await;
                true
            }
            Err(e) => {
                let transient = e.is_transient();
                let key = failed_id(id);
                let k2 = key.clone();
                let existing = self.store.blocking(move |s| s.failed_run(&k2)).await.ok().flatten();
                let now = crate::store::now_ms();
                let mut entry = existing.unwrap_or_else(|| {
                    FailedRun::new(
                        key,
                        RunKind::Chatter,
                        &format!("{}:{}", note.record.model, note.record.id),
                        String::new(),
                        transient,
                        now,
                    )
                });
                entry.record_id = Some(note.record.id);
                let parked = entry.failed_again(e.to_string(), transient, now, &self.retry);
                note.attempts += 1;
                note.last_error = Some(e.to_string());
                note.parked = parked;
                note.next_attempt_ms = entry.next_attempt_ms.unwrap_or(i64::MAX);
                if parked {
                    tracing::error!(note = id, model = %note.record.model, record = note.record.id, error = %e, "chatter note parked");
                } else {
                    tracing::warn!(note = id, model = %note.record.model, record = note.record.id, error = %e, "chatter note will be retried");
                }
                let _ = self
                    .store
                    .blocking(move |s| s.chatter_update(id, Some(&note), Some(entry)))
                    .await;
                false
            }
        }
    }

    async fn post(&self, note: &mut ChatterNote) -> Result<i64, OdooError> {
        let r = &note.record;
        let mut attachment_ids = Vec::new();
        if let Some(file) = &note.file {
            let att = match note.attachment_id {
                Some(a) => a,
                None => {
                    let a = self
                        .odoo
                        .create(
                            "ir.attachment",
                            json!({
                                "name": file.name,
                                "datas": file.data_b64,
                                "res_model": r.model,
                                "res_id": r.id,
                                "mimetype": file.mimetype,
                            }),
                        )
                        .await?;
                    note.attachment_id = Some(a);
                    // Kept at once: a retry of the post must not create the file twice.
                    let copy = note.clone();
                    let _ = self.store.blocking(move |s| s.chatter_put(&copy)).await;
                    a
                }
            };
            attachment_ids.push(att);
        }
        let mut kwargs = json!({
            "body": note_html(&note.text),
            "message_type": "comment",
            "subtype_xmlid": "mail.mt_note",
        });
        if !attachment_ids.is_empty() {
            kwargs["attachment_ids"] = json!(attachment_ids);
        }
        let answer = self
            .odoo
            .call(&r.model, "message_post", json!([[r.id]]), kwargs)
            .await?;
        Ok(match answer {
            Value::Number(n) => n.as_i64().unwrap_or(0),
            Value::Array(a) => a.first().and_then(Value::as_i64).unwrap_or(0),
            _ => 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_is_escaped_html_with_its_line_breaks() {
        assert_eq!(
            note_html("Commande <S00042> validée\r\npar Awa & co"),
            "<p>Commande &lt;S00042&gt; validée<br>par Awa &amp; co</p>"
        );
    }
}
