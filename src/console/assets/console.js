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
