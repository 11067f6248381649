//! What the console keeps of its own: how far the team has read each conversation.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::{Result, Store};

/// Conversation key → the id of the last message an agent saw in it. Shared by the team:
/// opening a conversation reads it for everyone.
pub(super) const CONSOLE_READ: TableDefinition<&str, u64> = TableDefinition::new("console_read");

impl Store {
    /// The last message id the team has seen in `contact`'s conversation (0: none).
    pub fn console_read_upto(&self, contact: &str) -> Result<u64> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(CONSOLE_READ)?;
        Ok(table.get(contact)?.map(|v| v.value()).unwrap_or(0))
    }

    /// Marks `contact`'s conversation read up to message `id` (never backwards).
    pub fn console_mark_read(&self, contact: &str, id: u64) -> Result<()> {
        let txn = self.db()?.begin_write()?;
        {
            let mut table = txn.open_table(CONSOLE_READ)?;
            let current = table.get(contact)?.map(|v| v.value()).unwrap_or(0);
            if id > current {
                table.insert(contact, id)?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}
