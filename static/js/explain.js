// Result page explanation: the heatmap's opacity slider and class picker. When the job finishes
// while the page is open (result.js updates data-status), fetch the job from the API once and
// draw the explanation (flags, heatmap over the upload, model's-eye view, agreement) without a reload.
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
    if (data.ood && details && predictions) {
      details.insertBefore(el("div", { "class": "notice notice-ood", id: "ood-notice", role: "alert" },
        "This doesn't look like any of the classes I know. The answer below is the closest of them."), predictions);
    }
    if (data.uncertain && details && predictions) {
      details.insertBefore(el("div", { "class": "notice notice-uncertain", id: "uncertain-notice", role: "status" },
        "Not sure. The model's calibrated confidence is under its threshold."), predictions);
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
    } else {
      slot.appendChild(el("p", { "class": "muted", id: "no-explanation" }, "No explanation is available for this model."));
    }
    if (data.agreement) {
      slot.appendChild(el("p", { "class": "agreement", id: "agreement" }, data.agreement.text));
    }
    slot.classList.remove("hidden");
    wire();
  }

  document.addEventListener("DOMContentLoaded", function () {
    wire();
    var root = document.getElementById("result");
    var slot = document.getElementById("explanation-slot");
    if (!root || !slot) return;
    var thumb = document.querySelector(".result-image img");
    var observer = new MutationObserver(function () {
      if (root.getAttribute("data-status") !== "done") return;
      observer.disconnect();
      fetch(root.getAttribute("data-api-url"), { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (data) { if (data) draw(slot, data, thumb ? thumb.getAttribute("src") : ""); })
        .catch(function () { /* the explanation shows on the next visit */ });
    });
    observer.observe(root, { attributes: true, attributeFilter: ["data-status"] });
  });
})();
