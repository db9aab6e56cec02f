// live.js: window.watchJob(id, onUpdate) calls onUpdate(job) with the API's JSON for the job each
// time it changes, until it is done or failed and no heatmaps are pending. Pushed by the server (server-sent events from
// /classifications/events); where EventSource is missing or the stream keeps failing, it polls
// /api/v1/classifications/<id>/ instead. Calls made in the same tick share one stream, so a
// page watching twenty jobs holds one connection, not twenty.
(function () {
  "use strict";

  var EVENTS_URL = "/classifications/events";
  var API_URL = "/api/v1/classifications/";
  var FINISHED = { done: true, failed: true };
  var MIN_DELAY = 700;
  var MAX_DELAY = 4000;
  var MAX_STREAM_ERRORS = 3; // consecutive errors without an event before falling back to polling

  var waiting = {}; // id -> [onUpdate, ...] registered in this tick

  // Settled: finished, and no heatmaps on their way (they follow a done job's answer).
  function settled(data) {
    var exp = data && data.explanation;
    return !!FINISHED[data.status] && !(exp && exp.heatmaps_status === "pending");
  }
  var scheduled = false;

  function notify(callbacks, data) {
    callbacks.forEach(function (cb) {
      try { cb(data); } catch (e) { if (window.console) console.error(e); }
    });
  }

  // <html data-live="stream|poll">: how this page follows its jobs (read by the browser tests).
  function mark(how) { document.documentElement.setAttribute("data-live", how); }

  function poll(id, callbacks, delay) {
    mark("poll");
    fetch(API_URL + encodeURIComponent(id) + "/", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status === 404) return null; // deleted: nothing more to watch
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (data) {
        if (!data) return;
        notify(callbacks, data);
        if (!settled(data)) window.setTimeout(function () { poll(id, callbacks, MIN_DELAY); }, MIN_DELAY);
      })
      .catch(function () {
        var next = Math.min(delay * 2, MAX_DELAY);
        window.setTimeout(function () { poll(id, callbacks, next); }, next);
      });
  }

  function stream(group) {
    var ids = Object.keys(group);
    var finished = {};
    var errors = 0;
    var url = EVENTS_URL + "?" + ids.map(function (id) { return "id=" + encodeURIComponent(id); }).join("&");
    var source = new EventSource(url, { withCredentials: true });
    source.addEventListener("open", function () { mark("stream"); });
    source.addEventListener("job", function (event) {
      errors = 0;
      var data = JSON.parse(event.data);
      if (settled(data)) finished[data.id] = true;
      if (group[data.id]) notify(group[data.id], data);
    });
    source.addEventListener("end", function () { source.close(); });
    source.addEventListener("error", function () {
      errors += 1;
      if (errors < MAX_STREAM_ERRORS && source.readyState !== EventSource.CLOSED) return; // it reconnects
      source.close();
      ids.forEach(function (id) { if (!finished[id]) poll(id, group[id], MIN_DELAY); });
    });
  }

  function flush() {
    scheduled = false;
    var group = waiting;
    waiting = {};
    if (!Object.keys(group).length) return;
    if (typeof window.EventSource === "function") {
      stream(group);
    } else {
      Object.keys(group).forEach(function (id) { poll(id, group[id], MIN_DELAY); });
    }
  }

  window.watchJob = function watchJob(id, onUpdate) {
    (waiting[id] = waiting[id] || []).push(onUpdate);
    if (!scheduled) {
      scheduled = true;
      window.setTimeout(flush, 0);
    }
  };
})();
