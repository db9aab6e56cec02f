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

  // Upload page: list the chosen files so the user sees what will be sent.
  function formatBytes(n) {
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KB";
    return (n / 1024 / 1024).toFixed(1) + " MB";
  }

  document.addEventListener("DOMContentLoaded", function () {
    var input = document.querySelector(".upload-form input[type=file]");
    var list = document.getElementById("file-list");
    if (!input || !list) return;
    input.addEventListener("change", function () {
      list.textContent = "";
      Array.prototype.forEach.call(input.files, function (file) {
        var item = document.createElement("li");
        var name = document.createElement("span");
        name.className = "filename";
        name.textContent = file.name;
        var size = document.createElement("span");
        size.className = "muted";
        size.textContent = " " + formatBytes(file.size);
        item.appendChild(name);
        item.appendChild(size);
        list.appendChild(item);
      });
    });
  });
})();
