-- "Voir détail": lines, quantities and totals of the order.
local b = require "boutique"

return {
  match = "^btn_order_details_(%d+)$",
  run = function(order_id)
    local order = b.order_or_say(order_id)
    if not order then return end
    local lines = env.odoo.search_read("sale.order.line", { { "order_id", "=", order.id } },
      { "name", "product_uom_qty", "price_unit", "price_subtotal" }, { order = "id asc" })
    local text = { "Détail de la commande " .. order.name .. " :" }
    for _, l in ipairs(lines) do
      local name = tostring(l.name):gsub("\n.*", "")
      text[#text + 1] = string.format("• %s × %g = %s", name, l.product_uom_qty, b.fcfa(l.price_subtotal))
    end
    text[#text + 1] = "Total : " .. b.fcfa(order.amount_total)
    text[#text + 1] = "État : " .. (b.states[order.state] or order.state)
    env.whatsapp.send_text(message.from, table.concat(text, "\n"))
  end,
}
