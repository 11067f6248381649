-- Second step of the seed's scenario: the payment method, after validation.
return {
  start = "choose",
  steps = {
    choose = {
      body = "Choisissez votre méthode de paiement",
      buttons = {
        { id = "wave", title = "Wave", reply = "Merci ! Paiement par Wave noté.",
          run = function(vars) env.store.set("payment_method:" .. tostring(vars.order_id), "Wave") end },
        { id = "orange_money", title = "Orange Money", reply = "Merci ! Paiement par Orange Money noté.",
          run = function(vars) env.store.set("payment_method:" .. tostring(vars.order_id), "Orange Money") end },
      },
    },
  },
}
