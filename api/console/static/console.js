/* metalcast console: live updates over server-sent events (/ui/events).
   Node events update the fleet table's rows and the node page in place; "counts"
   updates the fleet's counters; "patches" / "strategy" / "updates" re-read that page's live
   region once (only the pages that show them). No polling. */
(function () {
  "use strict";
  var body = document.body;
  var live = body.getAttribute("data-live");
  var statusEl = document.getElementById("live-status");
  if (!live || !window.EventSource) { return; }

  function setText(el, text) { if (el && el.textContent !== text) { el.textContent = text; } }

  function stepName(n) {
    var s = n.deploy_step || n.clean_step;
    return s && s.step ? (s.interface + "." + s.step) : "none";
  }

  function onNodeRow(n) {
    var row = document.querySelector('tr[data-node="' + n.uuid + '"]');
    if (!row) { return; }
    var ps = row.querySelector('[data-field="provision_state"]');
    if (ps) {
      ps.innerHTML = "";
      var span = document.createElement("span");
      span.className = "state s-" + String(n.provision_state || "").replace(/ /g, "-");
      span.textContent = n.provision_state || "";
      ps.appendChild(span);
      if (n.target_provision_state) { ps.appendChild(document.createTextNode(" → " + n.target_provision_state)); }
    }
    setText(row.querySelector('[data-field="power_state"]'), n.power_state || "–");
    var m = row.querySelector('[data-field="maintenance"]');
    if (m) { setText(m, (n.maintenance ? "maintenance" : "") + (n.fault ? " " + n.fault : "")); }
    setText(row.querySelector('[data-field="updated_at"]'), String(n.updated_at || "").replace("T", " ").slice(0, 19));
    row.classList.toggle("failed", /failed$/.test(n.provision_state || ""));
    row.classList.add("flash");
    setTimeout(function () { row.classList.remove("flash"); }, 800);
  }

  function onNodePage(n) {
    var page = document.querySelector("[data-node-page]");
    if (!page || page.getAttribute("data-node-page") !== n.uuid) { return; }
    setText(document.getElementById("provision-state"), n.provision_state || "");
    setText(document.getElementById("target-state"), n.target_provision_state ? "→ " + n.target_provision_state : "");
    setText(document.getElementById("power-state"), n.power_state || "–");
    setText(document.getElementById("maintenance"), n.maintenance ? "yes" : "no");
    setText(document.getElementById("current-step"), stepName(n));
    var progress = document.getElementById("step-progress");
    if (progress) { progress.hidden = !n.target_provision_state; }
    if (n.provision_state !== page.getAttribute("data-state") || n.last_error) {
      page.setAttribute("data-state", n.provision_state || "");
      reread();   /* the history gained a row */
    }
    var err = document.getElementById("last-error");
    if (err) {
      err.classList.toggle("hidden", !n.last_error);
      err.textContent = n.last_error ? "Last error: " + n.last_error : "";
    }
  }

  function onCounts(counts) {
    Object.keys(counts).forEach(function (name) {
      var list = document.querySelector('[data-counts="' + name + '"]');
      if (!list) { return; }
      list.innerHTML = "";
      Object.keys(counts[name]).forEach(function (key) {  /* sorted by the server */
        var li = document.createElement("li");
        var k = document.createElement("span"); k.className = "k"; k.textContent = key;
        var v = document.createElement("span"); v.className = "n"; v.textContent = counts[name][key];
        li.appendChild(k); li.appendChild(document.createTextNode(" ")); li.appendChild(v);
        list.appendChild(li);
      });
    });
    if (counts.total) { setText(document.getElementById("fleet-total"), counts.total.all + " nodes"); }
  }

  var rereading = false, again = false;
  function reread() {   /* one GET of this page when what it shows changed */
    if (rereading) { again = true; return; }
    rereading = true;
    fetch(window.location.href, { credentials: "same-origin" }).then(function (r) { return r.text(); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("live-region");
        var mine = document.getElementById("live-region");
        if (fresh && mine) { mine.innerHTML = fresh.innerHTML; }
      }).finally(function () {
        rereading = false;
        if (again) { again = false; reread(); }
      });
  }

  var handlers = {
    node: function (e) { onNodeRow(e); onNodePage(e); },
    counts: function (e) { if (live === "fleet") { onCounts(e.counts); } },
    patches: function () { if (live === "patches") { reread(); } },
    strategy: function () { if (live === "strategy") { reread(); } },
    updates: function () { if (live === "updates") { reread(); } },
    resync: function () { if (live !== "fleet") { window.location.reload(); } }
  };

  var source = new EventSource(body.getAttribute("data-events"));
  source.onopen = function () { setText(statusEl, "live"); statusEl.className = "live-status on"; };
  source.onerror = function () { setText(statusEl, "reconnecting…"); statusEl.className = "live-status off"; };
  source.onmessage = function (msg) {
    var event;
    try { event = JSON.parse(msg.data); } catch (err) { return; }
    var handler = handlers[event.kind];
    if (handler) { handler(event); }
    body.setAttribute("data-last-event", String(Date.now()));
  };
}());
