/// The status page served at `/`: plain HTML and a few lines of script that poll `/status.json`
/// every second and draw the job's header, a row per chip, a live loss curve (inline SVG) and the
/// alerts. No libraries and nothing fetched from elsewhere; text from the job goes in with
/// `textContent`, never as HTML.
public enum StatusPage {
    public static let html = #"""
    <!doctype html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <title>Medley</title>
    <style>
      body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
      h1 { font-size: 1.3em; margin: 0 0 .3em; }
      #head { margin-bottom: 1em; color: #444; }
      table { border-collapse: collapse; margin-bottom: 1.2em; }
      th, td { padding: .25em .7em; border-bottom: 1px solid #ddd; text-align: right; }
      th:nth-child(-n+5), td:nth-child(-n+5) { text-align: left; }
      td.ok { color: #1a7f37; } td.bad { color: #b42318; font-weight: 600; }
      #alerts li { margin: .2em 0; } #alerts .kind { font-weight: 600; margin-right: .5em; }
      svg { border: 1px solid #ddd; background: #fafafa; }
      .stale { color: #b42318; }
      #bar { width: 720px; height: 8px; background: #e5e7eb; margin-bottom: 1em; } #done { height: 8px; width: 0; background: #2463eb; }
    </style>
    </head>
    <body>
    <h1 id="job">Medley</h1>
    <div id="head">waiting for the supervisor…</div>
    <div id="bar"><div id="done"></div></div>
    <table><thead><tr><th>rank</th><th>adapter</th><th>vendor</th><th>chip</th><th>host</th><th>status</th><th>share</th>
    <th>step ms</th><th>idle</th><th>memory</th><th>heartbeat</th></tr></thead><tbody id="chips"></tbody></table>
    <h2>Loss</h2>
    <svg id="curve" width="720" height="220" viewBox="0 0 720 220"></svg>
    <h2>Alerts</h2>
    <ul id="alerts"><li>none</li></ul>
    <script>
    const $ = id => document.getElementById(id);
    const fmt = (v, d) => v === undefined || v === null || typeof v !== "number" ? "-" : v.toFixed(d);
    const bytes = b => b === undefined ? "-" : b >= 1073741824 ? (b / 1073741824).toFixed(1) + " GiB" : (b / 1048576).toFixed(1) + " MiB";
    function cell(row, text, cls) { const td = row.insertCell(); td.textContent = text; if (cls) td.className = cls; }
    function draw(s) {
      $("job").textContent = "Medley: " + s.job;
      const eta = s.etaSeconds === undefined ? "" : "  ETA " + Math.round(s.etaSeconds) + " s";
      $("head").textContent = "step " + s.step + "/" + s.totalSteps + eta + "  loss " + fmt(s.loss, 4) +
        (s.validationLoss === undefined ? "" : "  validation " + fmt(s.validationLoss, 4)) +
        "  " + fmt(s.tokensPerSecond, 0) + " tokens/s  elapsed " + Math.round(s.elapsedSeconds) + " s  alerts " + s.alertCount;
      $("done").style.width = (s.totalSteps > 0 ? Math.min(100, 100 * s.step / s.totalSteps) : 0) + "%";
      const body = $("chips"); body.textContent = "";
      for (const r of s.ranks) {
        const row = body.insertRow();
        cell(row, r.rank); cell(row, r.adapter || "-"); cell(row, r.vendor || "-"); cell(row, r.chip || "-"); cell(row, r.host || "-");
        cell(row, r.status, r.up ? "ok" : (r.status === "done" ? "" : "bad"));
        cell(row, r.share === undefined ? "-" : r.share); cell(row, fmt(r.stepMs, 1));
        cell(row, r.idleFraction === undefined ? "-" : Math.round(100 * r.idleFraction) + "%");
        cell(row, bytes(r.memoryUsedBytes) + " / " + bytes(r.memoryBytes)); cell(row, fmt(r.heartbeatAgeSeconds, 1) + " s");
      }
      const svg = $("curve"); svg.textContent = "";
      const pts = s.steps.filter(p => typeof p.loss === "number" && isFinite(p.loss));
      if (pts.length > 1) {
        const x0 = pts[0].step, x1 = pts[pts.length - 1].step;
        const ys = pts.map(p => p.loss), lo = Math.min(...ys), hi = Math.max(...ys), span = hi - lo || 1;
        const X = v => 40 + 670 * (v - x0) / Math.max(1, x1 - x0), Y = v => 200 - 180 * (v - lo) / span;
        const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
        line.setAttribute("fill", "none"); line.setAttribute("stroke", "#2463eb"); line.setAttribute("stroke-width", "2");
        line.setAttribute("points", pts.map(p => X(p.step).toFixed(1) + "," + Y(p.loss).toFixed(1)).join(" "));
        svg.appendChild(line);
        for (const p of pts.filter(p => typeof p.validationLoss === "number" && isFinite(p.validationLoss))) {
          const dot = document.createElementNS("http://www.w3.org/2000/svg", "circle");
          dot.setAttribute("cx", X(p.step).toFixed(1)); dot.setAttribute("r", "4"); dot.setAttribute("fill", "#d97706");
          dot.setAttribute("cy", Math.max(4, Math.min(216, Y(p.validationLoss))).toFixed(1)); svg.appendChild(dot);
        }
        const legend = document.createElementNS("http://www.w3.org/2000/svg", "text");
        legend.setAttribute("x", "460"); legend.setAttribute("y", "14"); legend.setAttribute("font-size", "11");
        legend.textContent = "steps " + x0 + "–" + x1 + ": training (line), validation (dots)"; svg.appendChild(legend);
        for (const [v, y] of [[hi, 24], [lo, 204]]) {
          const t = document.createElementNS("http://www.w3.org/2000/svg", "text");
          t.setAttribute("x", "2"); t.setAttribute("y", String(y)); t.setAttribute("font-size", "11"); t.textContent = v.toFixed(3);
          svg.appendChild(t);
        }
      }
      const list = $("alerts"); list.textContent = "";
      if (s.alerts.length === 0) { const li = document.createElement("li"); li.textContent = "none"; list.appendChild(li); }
      for (const a of s.alerts.slice().reverse()) {
        const li = document.createElement("li"), k = document.createElement("span");
        k.className = "kind"; k.textContent = a.kind; li.appendChild(k); li.appendChild(document.createTextNode(a.message));
        list.appendChild(li);
      }
    }
    async function poll() {
      try {
        const r = await fetch("status.json", {cache: "no-store"});
        draw(await r.json());
        $("head").classList.remove("stale");
      } catch (e) {
        $("head").classList.add("stale");
      }
      setTimeout(poll, 1000);
    }
    poll();
    </script>
    </body>
    </html>
    """#
}
