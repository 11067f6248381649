-- Any inbound message no scenario or button took: log it. Replace with your own welcome.
return {
  run = function(msg)
    logger.info("message from", contact.name or contact.id, msg.type, msg.text or "")
  end,
}
