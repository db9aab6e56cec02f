// Upload page: a drop zone (drag and drop, paste, the picker, the camera on phones), previews
// with sizes, the server's own checks made before sending (limits and messages come from the
// form's data- attributes), one request per file to the JSON API with its own progress bar, and a
// result card per file that fills in without a reload. Without JavaScript the form posts as is.
(function () {
  "use strict";

  var FINISHED = { done: true, failed: true };
  var LABELS = { queued: "Queued", running: "Running", done: "Done", failed: "Failed" };
  var POLL_MIN = 700;
  var POLL_MAX = 4000;

  // --- following a job ------------------------------------------------------------------------
  // watchClassification(id, url, onUpdate): calls onUpdate(data) with the job's JSON until it is
  // done or failed. This is the one place that knows how updates arrive: it uses the push channel
  // of static/js/live.js (window.watchJob: server-sent events, with its own polling fallback) when
  // that script is on the page, and otherwise polls the API (session cookie).
  function watchClassification(id, url, onUpdate) {
    if (id && typeof window.watchJob === "function") {
      window.watchJob(id, onUpdate);
      return;
    }
    var delay = POLL_MIN;
    function poll() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
        .then(function (data) {
          onUpdate(data);
          delay = POLL_MIN;
          if (!FINISHED[data.status]) window.setTimeout(poll, delay);
        })
        .catch(function () {
          delay = Math.min(delay * 2, POLL_MAX);
          window.setTimeout(poll, delay);
        });
    }
    window.setTimeout(poll, 300);
  }
  window.watchClassification = watchClassification;

  // --- checks made in the browser (the server repeats them all) ---------------------------------
  // Same formatting as classifier.services._format_bytes, so messages read like the server's.
  function serverBytes(n) {
    return n >= 1024 * 1024 ? (n / (1024 * 1024)).toFixed(1) + " MB" : n + " bytes";
  }

  function acceptedList(form) {
    var types = {}, extensions = {};
    (form.getAttribute("data-accept") || "").split(",").forEach(function (item) {
      item = item.trim().toLowerCase();
      if (item.charAt(0) === ".") extensions[item] = true;
      else if (item) types[item] = true;
    });
    return { types: types, extensions: extensions };
  }

  function extensionOf(name) {
    var dot = (name || "").lastIndexOf(".");
    return dot >= 0 ? name.slice(dot).toLowerCase() : "";
  }

  function checkFile(form, file, accepted) {
    var limit = parseInt(form.getAttribute("data-max-bytes"), 10);
    if (file.size === 0) return form.getAttribute("data-msg-empty");
    if (limit && file.size > limit) {
      return form.getAttribute("data-msg-too-large")
        .replace("{size}", serverBytes(file.size)).replace("{limit}", serverBytes(limit));
    }
    var type = (file.type || "").toLowerCase();
    var ext = extensionOf(file.name);
    var typeKnown = type && accepted.types[type];
    var extKnown = ext && accepted.extensions[ext];
    // Only refuse what is clearly something else; a file with no type and no extension is left
    // to the server, which decides from the bytes.
    if (!typeKnown && !extKnown && (type || ext)) return form.getAttribute("data-msg-not-image");
    return null;
  }

  // --- elements ---------------------------------------------------------------------------------
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function preview(file, holder, onFail) {
    // createImageBitmap decodes the file without a URL, so the strict CSP (img-src 'self') holds.
    if (!window.createImageBitmap) return;
    window.createImageBitmap(file).then(function (bitmap) {
      var canvas = el("canvas", "preview-canvas");
      var scale = Math.min(1, 96 / Math.max(bitmap.width, bitmap.height));
      canvas.width = Math.max(1, Math.round(bitmap.width * scale));
      canvas.height = Math.max(1, Math.round(bitmap.height * scale));
      canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      canvas.setAttribute("role", "img");
      canvas.setAttribute("aria-label", "Preview of " + file.name + " (" + bitmap.width + "×" + bitmap.height + ")");
      holder.textContent = "";
      holder.appendChild(canvas);
      holder.classList.add("has-preview");
    }).catch(function () {
      // HEIC and TIFF (the server reads them), or a damaged file (the server says so): either way
      // the card says why there is no picture rather than showing a bare "Ready".
      if (onFail) onFail();
    });
  }

  function setup(form) {
    var input = form.querySelector("input[type=file][name=images]");
    var zone = document.getElementById("drop-zone");
    var list = document.getElementById("file-list");
    var status = document.getElementById("upload-status");
    var button = document.getElementById("upload-button");
    var clear = document.getElementById("clear-button");
    var camera = document.getElementById("camera-input");
    var token = form.querySelector("input[name=csrfmiddlewaretoken]").value;
    var accepted = acceptedList(form);
    var maxFiles = parseInt(form.getAttribute("data-max-files"), 10) || 20;
    var resultUrl = form.getAttribute("data-result-url");
    var items = []; // {file, card, error, state}
    var pasted = 0;

    zone.classList.add("drop-zone-active");
    document.getElementById("drop-hint").classList.remove("hidden");
    if (window.matchMedia && window.matchMedia("(pointer: coarse)").matches) {
      document.getElementById("camera-option").classList.remove("hidden");
    }

    function announce(text) { status.textContent = text; }

    function pending() { return items.filter(function (item) { return item.state === "ready"; }); }

    function refreshButtons() {
      var ready = pending().length;
      button.textContent = ready > 1 ? "Upload and classify " + ready + " images" : "Upload and classify";
      clear.classList.toggle("hidden", items.length === 0);
    }

    function showError(item, message) {
      item.state = "error";
      item.card.classList.add("file-card-error");
      item.errorBox.textContent = message;
      item.errorBox.classList.remove("hidden");
      item.stateBox.textContent = "Not sent";
    }

    function add(files) {
      var added = 0;
      Array.prototype.forEach.call(files, function (file) {
        var card = el("li", "file-card");
        var thumb = el("div", "file-preview", extensionOf(file.name).slice(1).toUpperCase() || "?");
        thumb.setAttribute("aria-hidden", "true");
        var body = el("div", "file-body");
        var head = el("div", "file-head");
        head.appendChild(el("span", "filename", file.name));
        head.appendChild(el("span", "muted file-size", " " + window.CifarUI.formatBytes(file.size)));
        var stateBox = el("span", "file-state", "Ready");
        var bar = el("progress", "file-progress hidden");
        bar.max = 100;
        bar.value = 0;
        bar.setAttribute("aria-label", "Upload progress of " + file.name);
        var errorBox = el("p", "file-error hidden");
        errorBox.setAttribute("role", "alert");
        var result = el("div", "file-result hidden");
        body.appendChild(head);
        body.appendChild(stateBox);
        body.appendChild(bar);
        body.appendChild(errorBox);
        body.appendChild(result);
        card.appendChild(thumb);
        card.appendChild(body);
        list.appendChild(card);
        var item = { file: file, card: card, bar: bar, stateBox: stateBox, errorBox: errorBox, result: result, state: "ready" };
        items.push(item);
        preview(file, thumb, function () {
          if (item.state === "ready") stateBox.textContent = "Ready (no preview: this browser cannot draw it; the server checks the file)";
        });
        var problem = checkFile(form, file, accepted);
        if (problem) showError(item, problem);
        else if (pending().length > maxFiles) showError(item, form.getAttribute("data-msg-too-many"));
        added += 1;
      });
      if (added) announce(added + (added === 1 ? " file" : " files") + " added. " + pending().length + " ready to upload.");
      refreshButtons();
    }

    function renderResult(item, data) {
      var box = item.result;
      box.classList.remove("hidden");
      box.textContent = "";
      var badge = el("span", "status status-" + data.status, LABELS[data.status] || data.status);
      badge.setAttribute("data-field", "status");
      box.appendChild(badge);
      if (data.status === "done" && data.predictions && data.predictions.length) {
        var top = data.predictions[0];
        var line = el("span", "file-top");
        line.appendChild(el("strong", "file-top-label", top.label));
        line.appendChild(document.createTextNode(" " + (top.probability * 100).toFixed(1) + "%"));
        box.appendChild(line);
        var set = data.prediction_set; // the classes the model cannot rule out, when several
        if (set && set.size > 1) {
          var others = set.labels.filter(function (label) { return label !== top.label; });
          var also = el("span", "file-set", "or " + others.join(", "));
          also.title = set.text;
          box.appendChild(also);
        }
      } else if (data.status === "failed") {
        box.appendChild(el("span", "file-error", data.error || "Classification failed."));
      }
      // The same link element on every redraw: a click that lands while an update redraws the
      // card still follows it.
      var link = item.link || (item.link = el("a", "file-link", "Details"));
      link.href = resultUrl.replace("00000000-0000-0000-0000-000000000000", data.id);
      link.setAttribute("aria-label", "Details of " + item.file.name);
      box.appendChild(link);
      item.card.setAttribute("data-status", data.status);
      if (FINISHED[data.status]) {
        item.stateBox.textContent = data.status === "done" ? "Classified" : "Failed";
        // Once: a done job is updated again when its heatmaps arrive (live.js follows it until then).
        if (!item.announced) announce(item.file.name + ": " + (data.status === "done" ? data.predictions[0].label : "failed"));
        item.announced = true;
      } else {
        item.stateBox.textContent = data.status === "running" ? "Classifying…" : "Waiting in the queue…";
      }
    }

    function send(item) {
      return new Promise(function (resolve) {
        item.state = "sending";
        item.bar.classList.remove("hidden");
        item.stateBox.textContent = "Uploading…";
        var body = new FormData();
        body.append("image", item.file, item.file.name);
        var xhr = new XMLHttpRequest();
        xhr.open("POST", form.getAttribute("data-api-url"));
        xhr.setRequestHeader("X-CSRFToken", token);
        xhr.setRequestHeader("Accept", "application/json");
        xhr.upload.addEventListener("progress", function (event) {
          if (event.lengthComputable) item.bar.value = Math.round((100 * event.loaded) / event.total);
        });
        xhr.addEventListener("load", function () {
          var data = null;
          try { data = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
          if (xhr.status === 202 && data) {
            item.state = "sent";
            item.bar.value = 100;
            item.bar.classList.add("hidden");
            renderResult(item, data);
            watchClassification(data.id, data.url, function (update) { renderResult(item, update); });
          } else {
            var message = data && data.error && data.error.message;
            if (xhr.status === 429) message = (message || "Too many uploads.") + " Nothing was lost: try this file again in a moment.";
            showError(item, message || "The upload failed (HTTP " + xhr.status + ").");
            item.bar.classList.add("hidden");
          }
          resolve();
        });
        xhr.addEventListener("error", function () {
          showError(item, "The upload failed: the network connection was lost.");
          item.bar.classList.add("hidden");
          resolve();
        });
        xhr.send(body);
      });
    }

    // Two uploads at a time: each has its own progress, and a long list does not open 20 sockets.
    function sendAll() {
      var queue = pending();
      if (!queue.length) {
        announce(items.length ? "No file is ready to upload." : "Choose at least one image to classify.");
        return;
      }
      button.disabled = true;
      announce("Uploading " + queue.length + (queue.length === 1 ? " file." : " files."));
      function worker() {
        var next = queue.shift();
        return next ? send(next).then(worker) : Promise.resolve();
      }
      Promise.all([worker(), worker()]).then(function () {
        button.disabled = false;
        refreshButtons();
      });
    }

    input.addEventListener("change", function () {
      add(input.files);
      input.value = ""; // the list above holds them now; choosing again adds more
    });
    if (camera) camera.addEventListener("change", function () { add(camera.files); camera.value = ""; });

    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (event) {
        event.preventDefault();
        if (event.dataTransfer) event.dataTransfer.dropEffect = "copy";
        zone.classList.add("drag-over");
      });
    });
    ["dragleave", "dragend"].forEach(function (name) {
      zone.addEventListener(name, function (event) {
        if (event.type === "dragleave" && zone.contains(event.relatedTarget)) return;
        zone.classList.remove("drag-over");
      });
    });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      zone.classList.remove("drag-over");
      if (event.dataTransfer && event.dataTransfer.files.length) add(event.dataTransfer.files);
    });
    // A drop that misses the zone must not navigate away from the page.
    window.addEventListener("dragover", function (event) { event.preventDefault(); });
    window.addEventListener("drop", function (event) { event.preventDefault(); });

    document.addEventListener("paste", function (event) {
      var data = event.clipboardData;
      if (!data) return;
      var files = [];
      Array.prototype.forEach.call(data.items || [], function (entry) {
        if (entry.kind !== "file") return;
        var file = entry.getAsFile();
        if (!file) return;
        if (!file.name || file.name === "image.png") {
          pasted += 1;
          var ext = (file.type.split("/")[1] || "png").replace("jpeg", "jpg");
          try { file = new File([file], "pasted-image-" + pasted + "." + ext, { type: file.type }); } catch (e) { /* keep */ }
        }
        files.push(file);
      });
      if (files.length) {
        event.preventDefault();
        add(files);
      }
    });

    clear.addEventListener("click", function () {
      items = items.filter(function (item) { return item.state === "sending"; });
      Array.prototype.slice.call(list.children).forEach(function (card) {
        if (!items.some(function (item) { return item.card === card; })) list.removeChild(card);
      });
      refreshButtons();
      announce("List cleared.");
    });

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      sendAll();
    });
    refreshButtons();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("upload-form");
    if (form && window.fetch && window.FormData && window.XMLHttpRequest) setup(form);
  });
})();
