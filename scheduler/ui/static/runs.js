// The runs page, live: the table is fetched again every few seconds while the page is visible.
(function () {
  "use strict";
  var holder = document.getElementById("runs-live");
  if (!holder) return;
  var busy = false;

  function reload() {
    if (busy || document.hidden) return;
    busy = true;
    var ticked = Array.prototype.map.call(holder.querySelectorAll("input[name=runs]:checked"), function (box) { return box.value; });
    fetch(holder.dataset.liveUrl, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        busy = false;
        if (html === null) return;
        holder.innerHTML = html; // server-rendered and escaped there
        ticked.forEach(function (id) {
          var box = holder.querySelector("input[name=runs][value='" + CSS.escape(id) + "']");
          if (box) box.checked = true;
        });
      })
      .catch(function () { busy = false; });
  }
  setInterval(reload, 3000);
})();
