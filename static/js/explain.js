// Result page explanation: the heatmap's opacity slider and class picker; and when the job
// finishes while the page is open (result.js updates data-status), reload once so the server
// renders the explanation the worker stored.
(function () {
  "use strict";

  document.addEventListener("DOMContentLoaded", function () {
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
    var root = document.getElementById("result");
    if (!root || document.getElementById("explanation") || root.getAttribute("data-status") === "done") return;
    new MutationObserver(function () {
      if (root.getAttribute("data-status") === "done") window.location.reload();
    }).observe(root, { attributes: true, attributeFilter: ["data-status"] });
  });
})();
