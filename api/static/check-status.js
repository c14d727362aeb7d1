// proc check-status page: refreshes the live part in place, and sends the admin actions.
(function () {
  "use strict";

  function refreshLive() {
    var live = document.getElementById("live");
    if (!live) return;
    // Resolved against the origin, never the page URL: a page opened as http://user:token@host/
    // carries credentials, and fetch() refuses URLs that do.
    var url = new URL(live.getAttribute("data-refresh-url"), window.location.origin).href;
    var seconds = parseFloat(live.getAttribute("data-refresh-seconds")) || 3;
    var state = document.getElementById("refresh-state");
    var updated = document.getElementById("updated");
    var busy = false;

    function tick() {
      if (busy || document.hidden) return;
      busy = true;
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" }, cache: "no-store" })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.text();
        })
        .then(function (html) {
          live.innerHTML = html;
          live.setAttribute("data-refreshes", String(parseInt(live.getAttribute("data-refreshes"), 10) + 1));
          var generated = live.querySelector(".live-generated");
          if (generated && updated) {
            var at = generated.getAttribute("data-generated");
            updated.setAttribute("datetime", at);
            updated.textContent = at.substring(11, 19) + " UTC";
          }
          if (state) { state.textContent = ""; state.className = "refresh-state"; }
        })
        .catch(function (error) {
          if (state) {
            state.textContent = "· refresh failed (" + error.message + "); showing the last answer";
            state.className = "refresh-state error";
          }
        })
        .then(function () { busy = false; });
    }

    window.setInterval(tick, seconds * 1000);
    document.addEventListener("visibilitychange", function () { if (!document.hidden) tick(); });
  }

  function actions() {
    var result = document.getElementById("action-result");
    var buttons = document.querySelectorAll("button[data-action]");
    Array.prototype.forEach.call(buttons, function (button) {
      button.addEventListener("click", function () {
        var question = button.getAttribute("data-confirm");
        if (question && !window.confirm(question)) return;
        button.disabled = true;
        fetch(new URL(button.getAttribute("data-action"), window.location.origin).href, {
          method: "POST", credentials: "same-origin",
          headers: { "X-Proc-Request": "1", "Accept": "application/json" }
        })
          .then(function (response) {
            return response.json().then(function (body) { return { ok: response.ok, body: body }; });
          })
          .then(function (answer) {
            if (!answer.ok) throw new Error(answer.body.error || "failed");
            result.className = "action-result";
            var plans = (answer.body.terminate || []).map(function (plan) {
              return "terminate " + plan.outcome + ": " + plan.detail;
            });
            result.textContent = [answer.body.action + " done: now " + answer.body.process.status]
              .concat(plans).join(" · ");
            window.setTimeout(function () { window.location.reload(); }, plans.length ? 3000 : 600);
          })
          .catch(function (error) {
            result.className = "action-result error";
            result.textContent = error.message;
            button.disabled = false;
          });
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    refreshLive();
    actions();
  });
})();
