-- "Valider": confirms the order in Odoo, answers, then asks for the payment method. As in
-- Odoo, only a quotation (draft, sent) can be confirmed: a confirmed, locked or cancelled
-- order gets a reply saying so.
local b = require "boutique"

return {
  match = "^btn_validate_order_(%d+)$",
  run = function(order_id)
    local order = b.order_or_say(order_id)
    if not order then return end
    local refusal = b.confirm_refusal(order)
    if refusal then
      env.whatsapp.send_text(message.from, refusal)
      return
    end
    local ok, err = b.try_call("sale.order", "action_confirm", { { order.id } })
    if not ok then
      logger.warn("order", order.name, "confirmation refused by Odoo:", tostring(err))
      env.whatsapp.send_text(message.from, b.refused_by_odoo(order, "validée"))
      return
    end
    env.odoo.log("sale.order", order.id, "Le client a validé la commande par WhatsApp (" .. message.from .. ").")
    env.whatsapp.send_text(message.from, "Commande " .. order.name .. " validée avec succès !")
    env.scenario.start("payment_method", message.from, { order_id = order.id, order_name = order.name })
    logger.info("order", order.name, "confirmed via WhatsApp")
  end,
}
