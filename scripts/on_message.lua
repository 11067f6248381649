-- scripts/on_message.lua: runs for every inbound message that no scenario step and no
-- button script handled. The shipped version only logs the message; replace it with your
-- own (an auto-reply, a routing rule, ...). Saving the file reloads it.
return {
  ---@param msg WaluaMessage
  run = function(msg)
    logger.info("message", msg.id, "from", contact.id, "type", msg.type, msg.text or "")
  end,
}
