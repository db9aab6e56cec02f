// Live camera page: grab a frame from getUserMedia, send it to POST /api/v1/frames/ (classified
// by the worker, not stored), show the top classes, and send the next frame as soon as the answer
// is back (at most MAX_FPS). "Keep this frame" uploads the last frame as an ordinary job. A pasted
// image (clipboard) is classified once the same way.
(function () {
  "use strict";

  var MAX_FPS = 15;
  var FRAME_SIZE = 96; // a centred square, scaled; the model takes 32x32 anyway
  var FPS_WINDOW = 10; // answers the frames/s figure is measured over

  function $(id) { return document.getElementById(id); }

  document.addEventListener("DOMContentLoaded", function () {
    var root = $("live");
    if (!root) return;
    var video = $("live-video");
    var pasted = $("live-pasted");
    var grab = document.createElement("canvas");
    grab.width = grab.height = FRAME_SIZE;
    var csrf = root.querySelector("input[name=csrfmiddlewaretoken]").value;
    var running = false;
    var stream = null;
    var lastFrame = null;
    var count = 0;
    var answeredAt = [];

    function setStatus(text) { $("live-status").textContent = text; }

    function render(data) {
      var list = $("live-predictions");
      list.textContent = "";
      (data.predictions || []).forEach(function (p) {
        var item = document.createElement("li");
        item.className = "prediction";
        var label = document.createElement("span");
        label.className = "prediction-label";
        label.textContent = p.label;
        var bar = document.createElement("progress");
        bar.className = "prediction-bar";
        bar.max = 1;
        bar.value = p.probability;
        var value = document.createElement("span");
        value.className = "prediction-value";
        value.textContent = (p.probability * 100).toFixed(1) + "%";
        item.appendChild(label);
        item.appendChild(bar);
        item.appendChild(value);
        list.appendChild(item);
      });
      var set = data.prediction_set;
      $("live-set").textContent = set ? set.text : "";
      $("live-set").className = "answer-set answer-set-" + (set && set.size > 1 ? "several" : "one");
      $("live-model").textContent = data.model_version || "—";
    }

    function classify(blob) {
      var body = new FormData();
      body.append("image", blob, "frame.jpg");
      var t0 = performance.now();
      return fetch(root.getAttribute("data-frame-url"), {
        method: "POST", body: body, credentials: "same-origin",
        headers: { "X-CSRFToken": csrf, Accept: "application/json" }
      }).then(function (response) {
        return response.json().then(function (data) {
          if (!response.ok) throw new Error((data.error && data.error.message) || "HTTP " + response.status);
          var now = performance.now();
          count += 1;
          answeredAt.push(now);
          if (answeredAt.length > FPS_WINDOW) answeredAt.shift();
          $("live-frames").textContent = String(count);
          $("live-latency").textContent = Math.round(now - t0) + " ms";
          if (answeredAt.length > 1) {
            var fps = (answeredAt.length - 1) * 1000 / (answeredAt[answeredAt.length - 1] - answeredAt[0]);
            $("live-fps").textContent = fps.toFixed(1);
          }
          lastFrame = blob;
          $("live-keep").disabled = false;
          render(data);
        });
      });
    }

    function frameBlob(source, width, height) {
      var side = Math.min(width, height);
      var ctx = grab.getContext("2d");
      ctx.drawImage(source, (width - side) / 2, (height - side) / 2, side, side, 0, 0, FRAME_SIZE, FRAME_SIZE);
      return new Promise(function (resolve) { grab.toBlob(resolve, "image/jpeg", 0.9); });
    }

    function loop() {
      if (!running) return;
      var started = performance.now();
      if (!video.videoWidth) { window.setTimeout(loop, 50); return; }
      frameBlob(video, video.videoWidth, video.videoHeight)
        .then(classify)
        .then(function () { if (running) setStatus("Classifying live."); },
          function (err) { if (running) setStatus("Frame not classified: " + err.message); })
        .then(function () {
          var wait = Math.max(0, 1000 / MAX_FPS - (performance.now() - started));
          window.setTimeout(loop, wait);
        });
    }

    $("live-start").addEventListener("click", function () {
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
        setStatus("This browser gives no camera access here; paste an image instead.");
        return;
      }
      setStatus("Asking for the camera…");
      navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 }, audio: false }).then(function (s) {
        stream = s;
        video.srcObject = s;
        video.classList.remove("hidden");
        pasted.classList.add("hidden");
        running = true;
        $("live-start").classList.add("hidden");
        $("live-stop").classList.remove("hidden");
        setStatus("Camera on.");
        loop();
      }, function (err) { setStatus("No camera: " + err.message); });
    });

    $("live-stop").addEventListener("click", function () {
      running = false;
      if (stream) stream.getTracks().forEach(function (t) { t.stop(); });
      stream = null;
      $("live-stop").classList.add("hidden");
      $("live-start").classList.remove("hidden");
      setStatus("Camera off.");
    });

    $("live-keep").addEventListener("click", function () {
      if (!lastFrame) return;
      var body = new FormData();
      body.append("image", lastFrame, "camera-frame.jpg");
      $("live-keep").disabled = true;
      fetch(root.getAttribute("data-keep-url"), {
        method: "POST", body: body, credentials: "same-origin",
        headers: { "X-CSRFToken": csrf, Accept: "application/json" }
      }).then(function (response) {
        return response.json().then(function (data) {
          if (response.status !== 202) throw new Error((data.error && data.error.message) || "HTTP " + response.status);
          var kept = $("live-kept");
          kept.textContent = "";
          var link = document.createElement("a");
          link.id = "live-kept-link";
          link.href = "/classifications/" + encodeURIComponent(data.id) + "/";
          link.textContent = "Kept: see the stored result";
          kept.appendChild(link);
        });
      }).catch(function (err) { setStatus("Could not keep the frame: " + err.message); })
        .then(function () { $("live-keep").disabled = false; });
    });

    document.addEventListener("paste", function (event) {
      var items = (event.clipboardData && event.clipboardData.items) || [];
      for (var i = 0; i < items.length; i++) {
        if (items[i].kind === "file" && items[i].type.indexOf("image/") === 0) {
          var file = items[i].getAsFile();
          event.preventDefault();
          createImageBitmap(file).then(function (bitmap) {
            var ctx = pasted.getContext("2d");
            ctx.clearRect(0, 0, pasted.width, pasted.height);
            var scale = Math.min(pasted.width / bitmap.width, pasted.height / bitmap.height);
            ctx.drawImage(bitmap, 0, 0, bitmap.width * scale, bitmap.height * scale);
            pasted.classList.remove("hidden");
            if (!running) video.classList.add("hidden");
            return frameBlob(bitmap, bitmap.width, bitmap.height);
          }).then(classify).then(function () { setStatus("Pasted image classified."); },
            function (err) { setStatus("Pasted image not classified: " + err.message); });
          return;
        }
      }
    });
  });
})();
