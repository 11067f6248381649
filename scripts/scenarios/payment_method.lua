-- Second step of the seed's scenario: the payment method, after validation. The choice is
-- kept (env.store) and noted on the order's chatter in Odoo.
local b = require "boutique"
return {
  start = "choose",
  steps = {
    choose = {
      body = "Choisissez votre méthode de paiement",
      buttons = {
        { id = "wave", title = "Wave", reply = "Merci ! Paiement par Wave noté.",
          run = function(vars) b.payment_chosen(vars, "Wave") end },
        { id = "orange_money", title = "Orange Money", reply = "Merci ! Paiement par Orange Money noté.",
          run = function(vars) b.payment_chosen(vars, "Orange Money") end },
      },
    },
  },
}
