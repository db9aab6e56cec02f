// History page: rows still queued or running update in place until they finish (live.js: one
// server-sent-event stream for all of them, polling the JSON API as a fallback).
(function () {
  "use strict";

  var FINISHED = { done: true, failed: true };
  var LABELS = { queued: "Queued", running: "Running", done: "Done", failed: "Failed" };

  function update(row, data) {
    var status = row.querySelector("[data-field=status]");
    status.textContent = LABELS[data.status] || data.status;
    status.className = "status status-" + data.status;
    row.querySelector("[data-field=top-label]").textContent = data.top_label || "—";
    row.querySelector("[data-field=confidence]").textContent =
      data.top_probability === null || data.top_probability === undefined
        ? "—" : (data.top_probability * 100).toFixed(1) + "%";
    row.setAttribute("data-status", data.status);
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("tr[data-api-url]"), function (row) {
      if (FINISHED[row.getAttribute("data-status")]) return;
      window.watchJob(row.id.replace(/^row-/, ""), function (data) { update(row, data); });
    });
  });
})();
