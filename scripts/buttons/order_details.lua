-- "Voir détail": lines, quantities and totals of the order, in its currency. Section and
-- note lines (titles and comments in the quotation, no product) are not listed.
local b = require "boutique"

return {
  match = "^btn_order_details_(%d+)$",
  run = function(order_id)
    local order = b.order_or_say(order_id)
    if not order then return end
    local lang = b.partner_lang(order.partner_id)
    local text = { "Détail de la commande " .. order.name .. " :" }
    for _, l in ipairs(b.order_lines(order)) do
      local name = tostring(l.name):gsub("\n.*", "")
      text[#text + 1] = string.format("• %s × %s = %s", name, b.format_qty(l.product_uom_qty, b.lang(lang)),
        b.money(l.price_subtotal, order.currency_id, lang))
    end
    text[#text + 1] = "Total : " .. b.money(order.amount_total, order.currency_id, lang)
    text[#text + 1] = "État : " .. (b.states[order.state] or order.state)
    env.whatsapp.send_text(message.from, table.concat(text, "\n"))
  end,
}
