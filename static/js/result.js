// Result page: follow the job (live.js: pushed by server-sent events, polling as a fallback) until
// it is done or failed, and redraw the status, the top-5 bars and the timings. The
// server-rendered page is the no-JS fallback.
(function () {
  "use strict";

  var FINISHED = { done: true, failed: true };
  var LABELS = { queued: "Queued", running: "Running", done: "Done", failed: "Failed" };

  function $(id) { return document.getElementById(id); }

  // The browser's own time zone, named (app.js); UTC as on the server if app.js is missing.
  function formatTime(iso) {
    if (window.CifarUI) return window.CifarUI.formatTime(iso, "seconds");
    return iso ? new Date(iso).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC") : "—";
  }

  function seconds(fromIso, toIso) {
    if (!fromIso || !toIso) return "—";
    var ms = new Date(toIso).getTime() - new Date(fromIso).getTime();
    return isNaN(ms) ? "—" : (ms / 1000).toFixed(2) + " s";
  }

  function setTime(id, iso) {
    var el = $(id);
    if (!el) return;
    el.textContent = formatTime(iso);
    el.setAttribute("datetime", iso || "");
  }

  function renderPredictions(predictions) {
    var list = $("predictions");
    if (!list) return;
    list.textContent = "";
    (predictions || []).slice(0, 5).forEach(function (p) {
      var item = document.createElement("li");
      item.className = "prediction";
      var label = document.createElement("span");
      label.className = "prediction-label";
      label.textContent = p.label;
      var bar = document.createElement("progress");
      bar.className = "prediction-bar";
      bar.max = 1;
      bar.value = p.probability;
      bar.setAttribute("aria-label", p.label + " probability");
      var value = document.createElement("span");
      value.className = "prediction-value";
      value.textContent = (p.probability * 100).toFixed(1) + "%";
      item.appendChild(label);
      item.appendChild(bar);
      item.appendChild(value);
      list.appendChild(item);
    });
  }

  function timings(data) {
    return { queued: data.queued_at, started: data.started_at, finished: data.finished_at };
  }

  function render(root, data) {
    var status = data.status;
    root.setAttribute("data-status", status);
    var badge = $("status");
    badge.textContent = LABELS[status] || status;
    badge.className = "status status-" + status;

    var pending = $("pending");
    pending.classList.toggle("hidden", !!FINISHED[status]);
    $("pending-text").textContent = status === "running" ? "Classifying…" : "Waiting in the queue…";

    $("error").classList.toggle("hidden", status !== "failed");
    $("error-text").textContent = data.error || "";

    renderPredictions(data.predictions);
    var feedback = $("feedback");  // classifier.evaluation's box: offered once the job is done
    if (feedback) feedback.classList.toggle("hidden", status !== "done");
    $("model-version").textContent = data.model_version || "—";
    var t = timings(data);
    setTime("created-at", t.queued);
    setTime("started-at", t.started);
    setTime("finished-at", t.finished);
    $("wait-time").textContent = seconds(t.queued, t.started);
    $("run-time").textContent = seconds(t.started, t.finished);
  }

  // Keyboard shortcuts: "n" classifies another image, "h" opens the history (links marked
  // data-shortcut). Ignored while typing in a field or with a modifier held.
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.defaultPrevented) return;
    var target = event.target;
    if (target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))) return;
    var link = document.querySelector('a[data-shortcut="' + (event.key || "").toLowerCase() + '"]');
    if (link) {
      event.preventDefault();
      window.location.assign(link.href);
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    var root = $("result");
    if (!root) return;
    var status = root.getAttribute("data-status");
    if (FINISHED[status]) return;
    window.watchJob(root.getAttribute("data-id"), function (data) { render(root, data); });
  });
})();
