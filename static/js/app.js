// Jiefen: small progressive enhancements. Every page works without this file.
(function () {
  "use strict";
  function focusErrors(root) {
    var summary = (root || document).querySelector("[data-autofocus]");
    if (summary) { summary.focus(); }
  }
  document.addEventListener("DOMContentLoaded", function () { focusErrors(document); });
  document.addEventListener("htmx:afterSwap", function (event) { focusErrors(event.target.parentNode || document); });
  document.addEventListener("htmx:responseError", function (event) {
    // An htmx request the server refused (403 expired form, 404, 500): fall back to a full load.
    var xhr = event.detail.xhr;
    if (xhr && xhr.responseURL) { window.location.assign(xhr.responseURL); }
  });
  document.addEventListener("click", function (event) {
    if (event.target.matches && event.target.matches("[data-print]")) { window.print(); }
  });
  // Uploads with a progress bar: the form is sent by XMLHttpRequest (the body streams to the
  // server as it is read); the server answers with a redirect, which the page then follows.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.matches || !form.matches("form[data-upload]") || !window.FormData) { return; }
    event.preventDefault();
    var bar = form.querySelector("progress");
    var label = form.querySelector("[data-progress-label]");
    var button = form.querySelector("button[type=submit]");
    if (bar) { bar.hidden = false; bar.value = 0; }
    if (button) { button.disabled = true; }
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    var token = document.querySelector('meta[name="csrf-token"]');
    if (token) { xhr.setRequestHeader("X-CSRF-Token", token.content); }
    // As htmx does: the server answers 204 with HX-Redirect instead of a redirect the
    // request would follow itself (which would use up the page's one-time message).
    xhr.setRequestHeader("HX-Request", "true");
    xhr.upload.addEventListener("progress", function (e) {
      if (!e.lengthComputable) { return; }
      var pct = Math.floor(100 * e.loaded / e.total);
      if (bar) { bar.value = pct; }
      if (label) { label.textContent = pct + "%"; }
    });
    xhr.addEventListener("load", function () {
      window.location.assign(xhr.getResponseHeader("HX-Redirect") || xhr.responseURL || form.action);
    });
    xhr.addEventListener("error", function () {
      if (button) { button.disabled = false; }
      if (label) { label.textContent = form.getAttribute("data-upload-failed") || "!"; }
    });
    xhr.send(new FormData(form));
  });
  document.addEventListener("focusin", function (event) {
    if (event.target.matches && event.target.matches("input.copy")) { event.target.select(); }
  });
})();
