// Launch forms: a JSON field must hold JSON before the form goes (the server checks again).
(function () {
  "use strict";
  Array.prototype.forEach.call(document.querySelectorAll("textarea.json"), function (field) {
    field.addEventListener("input", function () {
      var text = field.value.trim();
      try { if (text) JSON.parse(text); field.setCustomValidity(""); }
      catch (e) { field.setCustomValidity("Write JSON here, e.g. [1, 2] or {\"a\": 1}"); }
    });
  });
})();
