-- "Télécharger le devis": the quotation or order as Odoo 16's portal prints it
-- (sale.report_saleorder), sent as a document and noted on the order's chatter. Offer it
-- with a button `btn_order_pdf_<id>`.
local b = require "boutique"

return {
  match = "^btn_order_pdf_(%d+)$",
  run = function(order_id)
    local order = b.order_or_say(order_id)
    if not order then return end
    local pdf = env.odoo.report_pdf("sale.report_saleorder", order.id)
    local kind = (order.state == "draft" or order.state == "sent") and "Devis" or "Commande"
    local filename = tostring(order.name):gsub("[^%w%-_]", "_") .. ".pdf"
    env.whatsapp.send_document(message.from, {
      bytes = pdf, filename = filename, caption = kind .. " " .. order.name,
      record = { model = "sale.order", id = order.id },
    })
  end,
}
