-- "Valider": confirms the order in Odoo, answers, then asks for the payment method.
local b = require "boutique"

return {
  match = "^btn_validate_order_(%d+)$",
  run = function(order_id)
    local order = b.order_or_say(order_id)
    if not order then return end
    if order.state == "draft" or order.state == "sent" then
      env.odoo.call("sale.order", "action_confirm", { { order.id } })
      env.whatsapp.send_text(message.from, "Commande " .. order.name .. " validée avec succès !")
      env.scenario.start("payment_method", message.from, { order_id = order.id, order_name = order.name })
      logger.info("order", order.name, "confirmed via WhatsApp")
    elseif order.state == "cancel" then
      env.whatsapp.send_text(message.from, "La commande " .. order.name .. " est annulée, elle ne peut plus être validée.")
    else
      env.whatsapp.send_text(message.from, "La commande " .. order.name .. " est déjà validée.")
    end
  end,
}
