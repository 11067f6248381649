-- Order created in Odoo -> the customer gets Valider / Annuler / Voir détail.
-- Switch: [vars] auto_send_order_creation. Outside the 24 h window, the approved template
-- [vars] order_created_template is sent instead, with the same three button payloads.
-- The amount is written in the order's currency for the partner's language (the template
-- script gets it ready in `amount_text`: templates cannot read Odoo).
local b = require "boutique"

return {
  model = "sale.order",
  on = "create",
  fields = { "name", "partner_id", "amount_total", "currency_id", "state" },
  run = function(order)
    if not env.vars.auto_send_order_creation then return end
    -- First seen already confirmed or cancelled (created and confirmed between two polls, or
    -- while walua was down): Valider / Annuler would be wrong; sale_order_state.lua tells
    -- the customer the order's state instead.
    if order.state ~= "draft" and order.state ~= "sent" then return end
    local phone, partner_name, lang = b.partner_phone(order.partner_id)
    if not phone then
      logger.warn("order", order.name, "has no partner phone; nothing sent")
      return
    end
    order.partner_name = partner_name
    order.amount_text = b.money(order.amount_total, order.currency_id, lang)
    -- Noted on the order's chatter (and a later delivery failure too).
    local about = { record = { model = "sale.order", id = order.id } }
    if env.whatsapp.window_open(phone) then
      env.notify(phone, "order_created", order, about)
    else
      -- The body's three values, then the payloads of its three quick replies (the same
      -- ids as the interactive buttons, so the button scripts answer both).
      env.whatsapp.send_template(phone, env.vars.order_created_template or "order_created", "fr", {
        partner_name or "Madame, Monsieur", order.name, order.amount_text,
        "btn_validate_order_" .. order.id,
        "btn_cancel_order_" .. order.id,
        "btn_order_details_" .. order.id,
      }, about)
    end
  end,
}
