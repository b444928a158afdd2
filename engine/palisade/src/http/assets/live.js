// Live refresh for the fleet and monitor pages: every few seconds, fetch
// this page again and swap its element `#live` for the fresh one. Plain
// JavaScript, no library; the page works without it (reload by hand).
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !window.fetch || !window.DOMParser) {
    return;
  }
  var seconds = parseInt(live.getAttribute("data-refresh"), 10) || 5;
  var status = document.getElementById("live-status");
  var busy = false;
  var failures = 0;

  function say(text) {
    if (status) {
      status.textContent = text;
    }
  }

  function refresh() {
    if (busy || document.hidden) {
      return;
    }
    // Do not pull the floor from under someone using the region.
    var active = document.activeElement;
    if (active && active !== document.body && live.contains(active)) {
      return;
    }
    busy = true;
    fetch(window.location.href, {
      credentials: "same-origin",
      headers: { "X-Palisade-Refresh": "1" },
      cache: "no-store"
    })
      .then(function (response) {
        if (!response.ok || response.redirected) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("live");
        if (fresh) {
          live.replaceWith(document.importNode(fresh, true));
          live = document.getElementById("live");
        }
        failures = 0;
        say("Updated " + new Date().toISOString().slice(11, 19) + " UTC (refreshes every " +
          seconds + " s)");
      })
      .catch(function () {
        failures += 1;
        say(failures < 3
          ? "The server did not answer; trying again."
          : "Live refresh stopped: the server did not answer. Reload the page to try again.");
      })
      .then(function () {
        busy = false;
      });
  }

  say("Refreshes every " + seconds + " s");
  window.setInterval(function () {
    if (failures < 3) {
      refresh();
    }
  }, seconds * 1000);
})();
