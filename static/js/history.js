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

  // Bulk selection: a "select all" box (shown only with JavaScript) and a live count.
  function setUpSelection() {
    var all = document.getElementById("select-all");
    var button = document.getElementById("bulk-delete-button");
    var count = document.getElementById("selected-count");
    if (!all || !button) return;
    var boxes = document.querySelectorAll("input.row-select");
    function refresh() {
      var n = Array.prototype.filter.call(boxes, function (b) { return b.checked; }).length;
      count.textContent = n ? n + " selected" : "";
      button.disabled = n === 0;
      all.checked = n > 0 && n === boxes.length;
      all.indeterminate = n > 0 && n < boxes.length;
    }
    all.classList.remove("hidden");
    document.getElementById("select-all-label").classList.remove("hidden");
    all.addEventListener("change", function () {
      Array.prototype.forEach.call(boxes, function (b) { b.checked = all.checked; });
      refresh();
    });
    Array.prototype.forEach.call(boxes, function (b) { b.addEventListener("change", refresh); });
    refresh();
  }

  document.addEventListener("DOMContentLoaded", function () {
    setUpSelection();
    Array.prototype.forEach.call(document.querySelectorAll("tr[data-api-url]"), function (row) {
      if (FINISHED[row.getAttribute("data-status")]) return;
      window.watchJob(row.id.replace(/^row-/, ""), function (data) { update(row, data); });
    });
  });
})();
