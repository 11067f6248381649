-- "Télécharger la facture": the invoice's PDF (Odoo's portal report, as the customer's
-- portal shows it), sent as a document and noted on the invoice's chatter. Offer it with
-- a button `btn_invoice_pdf_<id>` (e.g. from a hook or a reminder).
local b = require "boutique"

return {
  match = "^btn_invoice_pdf_(%d+)$",
  run = function(invoice_id)
    local invoice = b.invoice_or_say(invoice_id)
    if not invoice then return end
    local pdf = env.odoo.invoice_pdf(invoice.id)
    local filename = tostring(invoice.name):gsub("[^%w%-_]", "_") .. ".pdf"
    env.whatsapp.send_document(message.from, {
      bytes = pdf, filename = filename, caption = "Votre facture " .. invoice.name,
      record = { model = "account.move", id = invoice.id },
    })
  end,
}
