// Result page explanation: the heatmap's opacity slider and class picker. While the job is not
// finished, or its Grad-CAM maps are still being drawn (they follow the answer), follow it
// (live.js) and redraw the explanation (flags, heatmap over the upload, model's-eye view,
// agreement) each time its heatmaps' state changes, without a reload.
(function () {
  "use strict";

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text) node.textContent = text;
    return node;
  }

  function wire() {
    var overlay = document.getElementById("cam-overlay");
    var slider = document.getElementById("cam-opacity");
    var picker = document.getElementById("cam-class");
    if (overlay && slider) {
      var apply = function () { overlay.style.opacity = String(slider.value / 100); };
      slider.addEventListener("input", apply);
      apply();
    }
    if (overlay && picker) {
      picker.addEventListener("change", function () {
        overlay.src = picker.value;
        overlay.alt = "Grad-CAM heatmap for " + picker.options[picker.selectedIndex].text;
      });
    }
  }

  function draw(slot, data, thumbUrl) {
    var exp = data.explanation;
    var details = document.querySelector(".result-details");
    var predictions = document.getElementById("predictions");
    slot.textContent = "";
    slot.setAttribute("data-heatmaps", exp ? exp.heatmaps_status : "");
    var result = document.getElementById("result");
    var modelUrl = result && result.getAttribute("data-model-url");
    function notice(attrs, text, linkText) {
      var node = el("div", attrs, text);
      if (modelUrl) {
        node.appendChild(document.createTextNode(" "));
        node.appendChild(el("a", { href: modelUrl }, linkText));
        node.appendChild(document.createTextNode("."));
      }
      return node;
    }
    if (data.ood && details && predictions && !document.getElementById("ood-notice")) {
      details.insertBefore(notice({ "class": "notice notice-ood", id: "ood-notice", role: "alert" },
        "This doesn't look like any of the classes I know. The answer below is the closest of them.", "What this means"), predictions);
    }
    if (data.uncertain && details && predictions && !document.getElementById("uncertain-notice")) {
      details.insertBefore(notice({ "class": "notice notice-uncertain", id: "uncertain-notice", role: "status" },
        "Not sure. The model's calibrated confidence is under its threshold.", "How often it is wrong then"), predictions);
    }
    var set = data.prediction_set;
    if (set && details && predictions && !document.getElementById("answer-set")) {
      var line = el("p", { "class": "answer-set answer-set-" + (set.size === 1 ? "one" : "several"), id: "answer-set" });
      line.appendChild(el("strong", {}, set.size === 1 ? "Answer set: one class." : "Answer set: " + set.size + " classes."));
      line.appendChild(document.createTextNode(" " + set.text));
      if (modelUrl) {
        line.appendChild(document.createTextNode(" "));
        line.appendChild(el("a", { href: modelUrl.split("#")[0] + "#sets-heading" }, "What this means"));
        line.appendChild(document.createTextNode("."));
      }
      details.insertBefore(line, predictions);
    }
    slot.id = "explanation";
    slot.appendChild(el("h2", { id: "explanation-heading" }, exp && exp["class"] ? "Why “" + exp["class"] + "”?" : "Why?"));
    if (exp && exp.available) {
      var grid = el("div", { "class": "explain-grid" });
      var cam = el("figure", { "class": "cam" });
      var stack = el("div", { "class": "cam-stack", id: "cam-stack" });
      stack.appendChild(el("img", { "class": "cam-base", src: thumbUrl, alt: "Your image", width: "224", height: "224" }));
      stack.appendChild(el("img", { "class": "cam-overlay", id: "cam-overlay", src: exp.heatmap_url, alt: "Grad-CAM heatmap for " + exp["class"], width: "224", height: "224" }));
      cam.appendChild(stack);
      var caption = el("figcaption");
      caption.appendChild(el("label", { "for": "cam-opacity" }, "Heatmap opacity"));
      caption.appendChild(el("input", { type: "range", id: "cam-opacity", min: "0", max: "100", value: "60" }));
      if (exp.heatmaps.length > 1) {
        var select = el("select", { id: "cam-class" });
        exp.heatmaps.forEach(function (h) { select.appendChild(el("option", { value: h.url }, h.label)); });
        caption.appendChild(el("label", { "for": "cam-class" }, "for"));
        caption.appendChild(select);
      }
      caption.appendChild(el("span", { "class": "muted" }, "Grad-CAM of layer " + exp.layer + ": bright = evidence for the class."));
      cam.appendChild(caption);
      grid.appendChild(cam);
      var eye = el("figure", { "class": "model-eye" });
      eye.appendChild(el("img", { "class": "pixelated", src: exp.model_input_url, alt: "The input the model saw", width: "160", height: "160" }));
      eye.appendChild(el("figcaption", { "class": "muted" }, "What the model saw: the centre, shrunk to its input size."));
      grid.appendChild(eye);
      slot.appendChild(grid);
    } else if (exp && exp.heatmaps_status === "pending") {
      var wait = el("p", { "class": "pending", id: "heatmaps-pending" });
      wait.appendChild(el("span", { "class": "spinner", "aria-hidden": "true" }));
      wait.appendChild(document.createTextNode(" Drawing the heatmaps (where the evidence for each class lies)…"));
      slot.appendChild(wait);
      var seen = el("figure", { "class": "model-eye" });
      seen.appendChild(el("img", { "class": "pixelated", src: exp.model_input_url, alt: "The input the model saw", width: "160", height: "160" }));
      seen.appendChild(el("figcaption", { "class": "muted" }, "What the model saw."));
      slot.appendChild(seen);
    } else {
      slot.appendChild(el("p", { "class": "muted", id: "no-explanation" }, "No explanation is available for this model."));
    }
    if (data.agreement) {
      var agreement = el("p", { "class": "agreement", id: "agreement" });
      agreement.appendChild(el("strong", {}, data.agreement.text));
      if (data.superclass) agreement.appendChild(document.createTextNode(" Superclass: " + data.superclass + "."));
      slot.appendChild(agreement);
    }
    if (data.members && data.members.length > 1) {
      var list = el("ul", { "class": "members", id: "members" });
      data.members.forEach(function (m, i) {
        list.appendChild(el("li", {}, "Member " + (i + 1) + " (" + m.arch + "): " + m.label + " " + (m.probability * 100).toFixed(1) + "%"));
      });
      slot.appendChild(list);
    }
    slot.classList.remove("hidden");
    wire();
  }

  document.addEventListener("DOMContentLoaded", function () {
    wire();
    var root = document.getElementById("result");
    var slot = document.getElementById("explanation") || document.getElementById("explanation-slot");
    if (!root || !slot || typeof window.watchJob !== "function") return;
    var status = root.getAttribute("data-status");
    var drawn = status === "done" ? slot.getAttribute("data-heatmaps") || "" : null;
    if (status === "failed" || (status === "done" && drawn !== "pending")) return;
    var thumb = document.querySelector(".result-image img");
    window.watchJob(root.getAttribute("data-id"), function (data) {
      if (data.status !== "done") return;
      var state = data.explanation ? data.explanation.heatmaps_status : "";
      if (state === drawn) return;
      drawn = state;
      draw(slot, data, thumb ? thumb.getAttribute("src") : "");
    });
  });
})();
