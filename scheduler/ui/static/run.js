// The run page, live: each state change the API's event stream reports (one event per
// recorded batch, never one per node) schedules one re-fetch of the drawing, at most one a second.
(function () {
  "use strict";
  var page = document.getElementById("run-page");
  if (!page || page.dataset.active !== "1") return;
  var timer = null, busy = false, ended = false;

  function put(id, html) {
    var target = document.getElementById(id);
    if (target) target.innerHTML = html; // server-rendered and escaped there
  }

  function refresh() {
    if (busy) { soon(); return; }
    busy = true;
    fetch(page.dataset.liveUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        busy = false;
        if (!data) return;
        put("run-dag", data.dag);
        put("run-timeline", data.timeline);
        put("run-summary", data.summary);
        if (!data.active && !ended) {
          ended = true;
          setTimeout(function () { window.location.reload(); }, 800); // outputs, metrics, buttons
        }
      })
      .catch(function () { busy = false; });
  }

  function soon() {
    if (timer === null) timer = setTimeout(function () { timer = null; refresh(); }, 700);
  }

  if (window.EventSource) {
    var source = new EventSource(page.dataset.eventsUrl);
    source.addEventListener("change", soon);
    source.addEventListener("end", function () { source.close(); refresh(); });
  }
  setInterval(function () { if (!ended && !document.hidden) soon(); }, 5000); // if the stream drops
})();
