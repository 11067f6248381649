-- Invoice posted -> its PDF, fetched from Odoo, uploaded as media and sent as a document.
-- No public URL is needed (the seed's 131053 "media URL not reachable" cannot happen).
-- An invoice created and posted between two polls is first seen posted: `initial` gives it
-- previous.state = "draft", so it is sent. An invoice older than the hook (previous nil) is
-- not sent when it changes for another reason.
local b = require "boutique"

return {
  model = "account.move",
  on = "write",
  domain = { { "move_type", "=", "out_invoice" } },
  fields = { "state", "name", "partner_id", "amount_total", "currency_id" },
  initial = { state = "draft" },
  run = function(invoice, previous)
    if invoice.state ~= "posted" then return end
    if not previous or previous.state == "posted" then return end
    local phone, _, lang = b.partner_phone(invoice.partner_id)
    if not phone then
      logger.warn("invoice", invoice.name, "has no partner phone; not sent")
      return
    end
    local pdf = env.odoo.invoice_pdf(invoice.id)
    local amount = b.money(invoice.amount_total, invoice.currency_id, lang)
    local filename = tostring(invoice.name):gsub("[^%w%-_]", "_") .. ".pdf"
    local caption = string.format("Votre facture %s — %s", invoice.name, amount)
    -- Noted on the invoice's chatter, with the PDF that was sent.
    local about = { model = "account.move", id = invoice.id }
    if env.whatsapp.window_open(phone) then
      env.whatsapp.send_document(phone, { bytes = pdf, filename = filename, caption = caption, record = about })
    else
      local media = env.whatsapp.upload(pdf, filename)
      -- The document header, then the body's two values.
      env.whatsapp.send_template(phone, env.vars.invoice_template or "invoice_posted", "fr",
        { { id = media, filename = filename }, invoice.name, amount }, { record = about })
    end
  end,
}
