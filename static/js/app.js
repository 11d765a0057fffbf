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
  document.addEventListener("focusin", function (event) {
    if (event.target.matches && event.target.matches("input.copy")) { event.target.select(); }
  });
})();
