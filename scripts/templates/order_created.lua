-- The interactive message sent when an order is created (24 h window open).
local b = require "boutique"

return function(order)
  return {
    type = "buttons",
    body = string.format("Bonjour %s,\n\nVotre commande %s a été créée.\n\nMontant : %s",
      order.partner_name or "", order.name, b.fcfa(order.amount_total)),
    buttons = {
      { id = "btn_validate_order_" .. order.id, title = "Valider" },
      { id = "btn_cancel_order_" .. order.id, title = "Annuler" },
      { id = "btn_order_details_" .. order.id, title = "Voir détail" },
    },
  }
end
