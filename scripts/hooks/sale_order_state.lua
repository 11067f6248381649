-- Order state change (confirmed, cancelled, locked) -> a notification.
-- `previous` is the order as walua last saw it. An order created and confirmed between two
-- polls (or while walua was down) is first seen already confirmed: `initial` says it started
-- as a draft, so it still gets its "Confirmée". Older orders first seen get nil: skipped.
-- A run that fails on a transient error (Odoo down) runs again later, whole: the checks
-- below make that safe (nothing is sent twice: effects of a failed run are dropped).
local b = require "boutique"

return {
  model = "sale.order",
  on = "write",
  fields = { "state", "name", "partner_id", "amount_total", "currency_id" },
  initial = { state = "draft" },
  run = function(order, previous)
    if not previous or previous.state == order.state then return end
    if order.state ~= "sale" and order.state ~= "cancel" and order.state ~= "done" then return end
    local phone, _, lang = b.partner_phone(order.partner_id)
    if not phone then return end
    local text = string.format("Votre commande %s est maintenant : %s (%s).",
      order.name, b.states[order.state] or order.state, b.money(order.amount_total, order.currency_id, lang))
    local about = { record = { model = "sale.order", id = order.id } }
    if env.whatsapp.window_open(phone) then
      env.whatsapp.send_text(phone, text, about)
    elseif env.vars.order_state_template then
      env.whatsapp.send_template(phone, env.vars.order_state_template, "fr",
        { order.name, b.states[order.state] or order.state }, about)
    else
      logger.info("24 h window closed and no order_state_template: no notification for", order.name)
    end
  end,
}
