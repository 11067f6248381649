//! What the console keeps of its own: how far the team has read each conversation.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::{CONVERSATION_MESSAGES, CONVERSATIONS, Conversation, Direction, MESSAGES, Result, Store, decode};

/// Conversation key → the id of the last message an agent saw in it. Shared by the team:
/// opening a conversation reads it for everyone.
pub(super) const CONSOLE_READ: TableDefinition<&str, u64> = TableDefinition::new("console_read");
/// Conversation key → how many of its inbound messages the team has seen: the inbox's unread
/// count is the conversation's `inbound_total` minus this, with no message read. One small
/// row per conversation ever opened, written when it is opened.
pub(super) const CONSOLE_SEEN: TableDefinition<&str, u64> = TableDefinition::new("console_seen");

#[derive(serde::Deserialize)]
struct DirectionOnly {
    direction: Direction,
}

impl Store {
    /// The last message id the team has seen in `contact`'s conversation (0: none).
    pub fn console_read_upto(&self, contact: &str) -> Result<u64> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(CONSOLE_READ)?;
        Ok(table.get(contact)?.map(|v| v.value()).unwrap_or(0))
    }

    /// Inbound messages of `contact`'s conversation the team has not seen.
    pub fn console_unread(&self, contact: &str) -> Result<u64> {
        let txn = self.db()?.begin_read()?;
        let total = {
            let conversations = txn.open_table(CONVERSATIONS)?;
            let row = conversations.get(contact)?;
            row.map(|v| decode::<Conversation>("conversations", v.value()))
                .transpose()?
                .map_or(0, |c| c.inbound_total)
        };
        let seen = txn
            .open_table(CONSOLE_SEEN)?
            .get(contact)?
            .map(|v| v.value())
            .unwrap_or(0);
        Ok(total.saturating_sub(seen))
    }

    /// Marks `contact`'s conversation read up to message `id` (never backwards): its seen
    /// count becomes its inbound total less the inbound messages after `id` (those that
    /// arrived after the page was read; usually none, so the walk is short).
    ///
    /// Written without its own fsync (it becomes durable with the next durable commit): a
    /// read mark lost in a crash only shows a message as unread again.
    pub fn console_mark_read(&self, contact: &str, id: u64) -> Result<()> {
        if self.console_read_upto(contact)? >= id {
            return Ok(());
        }
        let mut txn = self.db()?.begin_write()?;
        txn.set_durability(redb::Durability::None)
            .map_err(|e| super::StoreError::Redb(redb::Error::from(e)))?;
        {
            let mut table = txn.open_table(CONSOLE_READ)?;
            let current = table.get(contact)?.map(|v| v.value()).unwrap_or(0);
            if id > current {
                table.insert(contact, id)?;
                let total = {
                    let conversations = txn.open_table(CONVERSATIONS)?;
                    let row = conversations.get(contact)?;
                    row.map(|v| decode::<Conversation>("conversations", v.value()))
                        .transpose()?
                        .map_or(0, |c| c.inbound_total)
                };
                let index = txn.open_table(CONVERSATION_MESSAGES)?;
                let messages = txn.open_table(MESSAGES)?;
                let mut later = 0u64;
                for row in index.range((contact, id.saturating_add(1))..=(contact, u64::MAX))? {
                    let mid = row?.0.value().1;
                    if let Some(m) = messages.get(mid)?
                        && decode::<DirectionOnly>("messages", m.value())?.direction == Direction::Inbound
                    {
                        later += 1;
                    }
                }
                let mut seen = txn.open_table(CONSOLE_SEEN)?;
                let before = seen.get(contact)?.map(|v| v.value()).unwrap_or(0);
                let now = total.saturating_sub(later);
                if now > before {
                    seen.insert(contact, now)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}
