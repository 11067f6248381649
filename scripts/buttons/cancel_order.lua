-- "Annuler": cancels the order in Odoo and answers.
local b = require "boutique"

return {
  match = "^btn_cancel_order_(%d+)$",
  run = function(order_id)
    local order = b.order_or_say(order_id)
    if not order then return end
    if order.state == "cancel" then
      env.whatsapp.send_text(message.from, "La commande " .. order.name .. " est déjà annulée.")
      return
    end
    env.odoo.call("sale.order", "action_cancel", { { order.id } }, { context = { disable_cancel_warning = true } })
    env.whatsapp.send_text(message.from, "Commande " .. order.name .. " annulée.")
    logger.info("order", order.name, "cancelled via WhatsApp")
  end,
}
