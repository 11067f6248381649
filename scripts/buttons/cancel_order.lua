-- "Annuler": cancels the order in Odoo and answers. As in Odoo, only a quotation or a
-- confirmed order can be cancelled: a locked (done) order, already delivered or closed, is
-- left as it is and the customer is told why (Odoo's own action_cancel would cancel it: the
-- check is here, like the hidden "Cancel" button of Odoo's form).
local b = require "boutique"

return {
  match = "^btn_cancel_order_(%d+)$",
  run = function(order_id)
    local order = b.order_or_say(order_id)
    if not order then return end
    local refusal = b.cancel_refusal(order)
    if refusal then
      env.whatsapp.send_text(message.from, refusal)
      logger.info("order", order.name, "not cancelled via WhatsApp: state", order.state)
      return
    end
    local ok, err = b.try_call("sale.order", "action_cancel", { { order.id } }, { context = { disable_cancel_warning = true } })
    if not ok then
      logger.warn("order", order.name, "cancel refused by Odoo:", tostring(err))
      env.whatsapp.send_text(message.from, b.refused_by_odoo(order, "annulée"))
      return
    end
    env.odoo.log("sale.order", order.id, "Le client a annulé la commande par WhatsApp (" .. message.from .. ").")
    env.whatsapp.send_text(message.from, "Commande " .. order.name .. " annulée.")
    logger.info("order", order.name, "cancelled via WhatsApp")
  end,
}
