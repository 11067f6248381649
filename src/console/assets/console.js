// walua console: live refresh over Server-Sent Events, and browser notifications when a
// script asks for a person. Pages work without it (plain links and forms).
(function () {
  "use strict";
  var live = document.querySelector("[data-live]");
  if (!live) return;
  var status = document.getElementById("live");
  var helpSeen = null;

  function helpSet(root) {
    var set = {};
    root.querySelectorAll("[data-help]").forEach(function (el) { set[el.getAttribute("data-help")] = true; });
    return set;
  }

  function notifyNewHelp(root) {
    var now = helpSet(root);
    if (helpSeen !== null) {
      Object.keys(now).forEach(function (contact) {
        if (!helpSeen[contact] && "Notification" in window && Notification.permission === "granted") {
          new Notification(document.body.getAttribute("data-help-text") || "walua", { body: contact });
        }
      });
    }
    helpSeen = now;
  }

  function refresh() {
    var url = live.getAttribute("data-live");
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (r.status === 401 || r.redirected) { window.location.reload(); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (html === null) return;
        var atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
        live.innerHTML = html;
        notifyNewHelp(live);
        if (live.hasAttribute("data-scroll") && atBottom) window.scrollTo(0, document.body.scrollHeight);
      })
      .catch(function () {});
  }

  notifyNewHelp(live);
  if (live.hasAttribute("data-scroll")) window.scrollTo(0, document.body.scrollHeight);
  if ("Notification" in window && Notification.permission === "default") {
    document.addEventListener("click", function ask() {
      Notification.requestPermission();
      document.removeEventListener("click", ask);
    });
  }
  var events = new EventSource("/console/events");
  events.addEventListener("change", refresh);
  events.onopen = function () { if (status) status.classList.remove("off"); };
  events.onerror = function () { if (status) status.classList.add("off"); };
})();

// The template picker: choosing a template shows its form at once, and the preview follows
// what is typed in each parameter field. Without script, the "Choisir" button and the
// server-side preview do the same.
(function () {
  "use strict";
  var select = document.querySelector("select[data-autosubmit]");
  if (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  }
  var preview = document.getElementById("tpl-preview");
  if (!preview) return;
  var text = preview.getAttribute("data-text") || "";
  var first = preview.firstChild;
  function render() {
    var out = text;
    document.querySelectorAll("[data-param]").forEach(function (input) {
      if (input.value) out = out.split("{{" + input.getAttribute("data-param") + "}}").join(input.value);
    });
    if (first && first.nodeType === 3) first.nodeValue = out;
  }
  document.querySelectorAll("[data-param]").forEach(function (input) {
    input.addEventListener("input", render);
  });
  render();
})();
