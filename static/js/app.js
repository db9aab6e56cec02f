// Site-wide behaviour, loaded on every page. No inline scripts anywhere (the CSP forbids them).
(function () {
  "use strict";

  // Forms with data-confirm ask before submitting (delete buttons).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement)) return;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });

  // --- times: the server renders UTC; the browser shows its own zone, named ---------------------
  var zone = "UTC";
  try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC"; } catch (e) { /* old browser */ }

  var FORMATS = {
    datetime: { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", timeZoneName: "short" },
    seconds: { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short" }
  };

  function formatTime(iso, style) {
    if (!iso) return "—";
    var d = new Date(iso);
    if (isNaN(d.getTime())) return "—";
    try {
      return new Intl.DateTimeFormat(undefined, FORMATS[style] || FORMATS.datetime).format(d);
    } catch (e) {
      return d.toString();
    }
  }

  function localiseTimes(root) {
    Array.prototype.forEach.call((root || document).querySelectorAll("time[datetime][data-format]"), function (el) {
      var iso = el.getAttribute("datetime");
      if (!iso) return;
      el.textContent = formatTime(iso, el.getAttribute("data-format"));
      el.title = zone;
    });
  }

  function formatBytes(n) {
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KB";
    return (n / 1024 / 1024).toFixed(1) + " MB";
  }

  // Shared with the page scripts (result.js, upload.js, history.js).
  window.CifarUI = { formatTime: formatTime, localiseTimes: localiseTimes, formatBytes: formatBytes, timeZone: zone };

  document.addEventListener("DOMContentLoaded", function () {
    localiseTimes(document);
    Array.prototype.forEach.call(document.querySelectorAll("[data-time-zone]"), function (el) { el.textContent = zone; });
    // Forms with a hidden "tz" field (history dates) send the browser's zone.
    Array.prototype.forEach.call(document.querySelectorAll("input[type=hidden][name=tz]"), function (el) {
      if (!el.value) el.value = zone;
    });
  });
})();
