// The node page: while the node runs, its log is followed (new lines appended as text, never
// as HTML); when it ends the page is loaded again with its final log, attempts and outputs.
(function () {
  "use strict";
  var page = document.getElementById("node-page");
  var out = document.getElementById("log-live");
  if (!page || !out || page.dataset.active !== "1") return;
  var after = page.dataset.after || "0", busy = false, done = false;

  function poll() {
    if (busy || done) return;
    busy = true;
    fetch(page.dataset.logUrl + "?after=" + encodeURIComponent(after), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        busy = false;
        if (!data) return;
        var atBottom = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
        data.chunks.forEach(function (chunk) { out.appendChild(document.createTextNode(chunk.text)); });
        if (atBottom) out.scrollTop = out.scrollHeight;
        after = String(data.after);
        var badge = document.getElementById("node-status");
        if (badge) { badge.textContent = data.status; badge.className = "badge st-" + data.status; }
        if (!data.active) {
          done = true;
          setTimeout(function () { window.location.reload(); }, 1000);
        }
      })
      .catch(function () { busy = false; });
  }
  setInterval(poll, 1000);
  poll();
})();
