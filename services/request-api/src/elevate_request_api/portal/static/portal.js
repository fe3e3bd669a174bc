// Elevate portal: progressive enhancement only. Every action works without this file
// (forms post, the search is a GET form); with it, the account search answers as the
// user types and a request's page follows its status over Server-Sent Events.
// Served from 'self' under a CSP without 'unsafe-inline' or 'unsafe-eval': no inline
// handlers, no eval, no style attributes.
"use strict";

(function () {
  // The browser's time zone, so the server can show times in it (UTC otherwise).
  function rememberZone() {
    var zone;
    try {
      zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    } catch (e) {
      return;
    }
    if (!zone || zone.length > 64) return;
    document.cookie = "tz=" + encodeURIComponent(zone) + "; path=/; max-age=31536000; samesite=lax";
    document.querySelectorAll("input[data-tz]").forEach(function (input) {
      if (!input.value || input.value === "UTC") input.value = zone;
    });
  }

  // The account picker: fetch the results fragment as the user types; the newest
  // keystroke wins (an older answer arriving late is dropped).
  function liveSearch() {
    var input = document.getElementById("account-search");
    var results = document.getElementById("account-results");
    if (!input || !results) return;
    var timer = null;
    var asked = 0;
    function search() {
      var mine = ++asked;
      var url = "/request/accounts?q=" + encodeURIComponent(input.value.trim());
      fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) {
          if (response.redirected || !response.ok) throw new Error("search: " + response.status);
          return response.text();
        })
        .then(function (html) {
          if (mine === asked) results.innerHTML = html;
        })
        .catch(function () {
          if (mine === asked) input.form.submit(); // fall back to the plain GET form
        });
    }
    input.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(search, 120);
    });
  }

  // A request's page: on each `status` event, swap in the fresh status and actions.
  function followStatus() {
    var panel = document.querySelector("[data-stream][data-panel]");
    if (!panel || typeof EventSource === "undefined") return;
    var source = new EventSource(panel.dataset.stream);
    function refresh() {
      fetch(panel.dataset.panel, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) {
          if (response.redirected || !response.ok) throw new Error("panel: " + response.status);
          return response.text();
        })
        .then(function (html) {
          panel.innerHTML = html;
        })
        .catch(function () {
          window.location.reload();
        });
    }
    source.addEventListener("status", function (event) {
      var status = JSON.parse(event.data).status;
      var shown = document.getElementById("status");
      if (!shown || shown.dataset.status !== status) refresh();
      if (panel.dataset.final.split(" ").indexOf(status) >= 0) source.close(); // no more news
    });
    source.addEventListener("expired", function () {
      source.close();
      window.location.reload(); // signs in again if the session is over
    });
    source.onerror = function () {
      // Refused (the session ended, too many open pages): the browser does not retry a
      // refused source; show what is true now (a page that needs a sign-in reloads).
      if (source.readyState === EventSource.CLOSED) refresh();
    };
  }

  document.addEventListener("DOMContentLoaded", function () {
    rememberZone();
    liveSearch();
    followStatus();
  });
})();
