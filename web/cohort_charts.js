// The dashboard and the report's renderer. Input: the state object of GET /api/state
// (docs/operability.md): {job, round, summary_rounds, sites, audit_tail}. With
// window.COHORT_DATA set (a `cohort report` file) it renders that once; otherwise it polls
// /api/state every 2 s and redraws in place. Everything from the state is written as text
// (textContent), never as markup: site names and audit values come from other parties.
(function () {
  "use strict";

  const POLL_MS = 2000;
  const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777",
                   "#4b5563", "#65a30d", "#7c3aed", "#0d9488"];
  const PHASES = ["waiting", "training", "upload", "fold", "evaluation", "checkpoint"];
  const PHASE_COLORS = {waiting: "#9ca3af", training: "#2563eb", upload: "#f59e0b", fold: "#16a34a",
                        evaluation: "#9333ea", checkpoint: "#dc2626"};

  const $ = (id) => document.getElementById(id);
  const num = (v) => (typeof v === "number" && isFinite(v) ? v : null);

  function text(tag, value, className) {
    const el = document.createElement(tag);
    el.textContent = value === undefined || value === null ? "" : String(value);
    if (className) el.className = className;
    return el;
  }

  function formatSeconds(s) {
    if (num(s) === null) return "";
    if (s < 120) return s.toFixed(1) + " s";
    if (s < 7200) return (s / 60).toFixed(1) + " min";
    return (s / 3600).toFixed(1) + " h";
  }

  // ---- charts (uPlot) ------------------------------------------------------------------

  // One uPlot per container, rebuilt only when its series change; otherwise setData.
  const charts = {};

  function chartWidth(el) { return Math.max(320, el.clientWidth || 560); }

  // Counts the pixels a chart has drawn, so a headless browser test can tell a drawn chart
  // from an empty canvas (the page's DOM cannot show a canvas's content): all of them, and
  // those its series (curves, points, bars) added to the plotting area over the grid, which
  // stay 0 for a chart that drew axes but no data.
  function countInk(u, x, y, width, height) {
    if (width <= 0 || height <= 0) return 0;
    const pixels = u.ctx.getImageData(x, y, width, height).data;
    let ink = 0;
    for (let i = 3; i < pixels.length; i += 4) if (pixels[i] !== 0) ink++;
    return ink;
  }

  const plotInk = (u) => countInk(u, u.bbox.left, u.bbox.top, u.bbox.width, u.bbox.height);

  // uPlot draws the axes and grid first ("drawAxes"), then the series, then "draw".
  function recordGridInk(u) {
    try { u.gridInk = plotInk(u); } catch (e) { u.gridInk = null; }
  }

  function recordInk(u) {
    try {
      const c = u.ctx.canvas, el = u.root.parentNode;
      el.dataset.inkPixels = String(countInk(u, 0, 0, c.width, c.height));
      if (u.gridInk !== null && u.gridInk !== undefined) el.dataset.seriesPixels = String(Math.max(0, plotInk(u) - u.gridInk));
    } catch (e) { /* a tainted canvas cannot be read; nothing to record */ }
  }

  function drawChart(id, seriesSpec, data, extraOpts) {
    const el = $(id);
    const key = JSON.stringify(seriesSpec.map((s) => s.label));
    const rounds = data[0].length;
    el.dataset.rounds = String(rounds);
    el.dataset.series = String(seriesSpec.length);
    if (rounds === 0) {
      if (charts[id]) { charts[id].destroy(); delete charts[id]; }
      el.replaceChildren(text("p", "No completed round yet.", "empty"));
      return;
    }
    if (charts[id] && charts[id].key === key) {
      charts[id].plot.setData(data);
      return;
    }
    if (charts[id]) charts[id].plot.destroy();
    el.replaceChildren();
    const opts = Object.assign({
      width: chartWidth(el),
      height: 260,
      scales: {x: {time: false}},
      axes: [{label: "round", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]}, {}],
      series: [{label: "round"}].concat(seriesSpec),
      hooks: {drawAxes: [recordGridInk], draw: [recordInk]},
    }, extraOpts || {});
    charts[id] = {key: key, plot: new uPlot(opts, data, el)};
  }

  function siteNames(rounds) {
    const names = new Set();
    for (const r of rounds) for (const c of r.clients || []) if (c.site) names.add(c.site);
    return Array.from(names).sort();
  }

  function siteValues(rounds, site, key) {
    return rounds.map((r) => {
      const c = (r.clients || []).find((x) => x.site === site);
      return c ? num(c[key]) : null;
    });
  }

  function line(label, color, extra) {
    return Object.assign({label: label, stroke: color, width: 2, spanGaps: true, points: {show: true, size: 5}}, extra || {});
  }

  function dashed(label, color) { return line(label, color, {width: 1, dash: [6, 4], points: {show: true, size: 3}}); }

  function drawCurves(rounds) {
    const x = rounds.map((r) => r.round);
    const sites = siteNames(rounds);
    const hasTest = rounds.some((r) => num(r.test_accuracy) !== null);

    const accSeries = [], accData = [x];
    if (hasTest) { accSeries.push(line("global test accuracy", "#111827", {width: 3})); accData.push(rounds.map((r) => num(r.test_accuracy))); }
    accSeries.push(line("client eval accuracy (weighted)", "#6b7280")); accData.push(rounds.map((r) => num(r.client_eval_accuracy)));
    sites.forEach((s, i) => { accSeries.push(dashed(s + " eval accuracy", PALETTE[i % PALETTE.length])); accData.push(siteValues(rounds, s, "eval_accuracy")); });
    drawChart("chart-accuracy", accSeries, accData);

    const lossSeries = [], lossData = [x];
    if (hasTest) { lossSeries.push(line("global test loss", "#111827", {width: 3})); lossData.push(rounds.map((r) => num(r.test_loss))); }
    lossSeries.push(line("train loss (weighted)", "#6b7280")); lossData.push(rounds.map((r) => num(r.train_loss)));
    sites.forEach((s, i) => { lossSeries.push(dashed(s + " eval loss", PALETTE[i % PALETTE.length])); lossData.push(siteValues(rounds, s, "eval_loss")); });
    drawChart("chart-loss", lossSeries, lossData);

    drawRoundTimes(rounds, x);
  }

  // Stacked bars: series k is drawn from 0 to the sum of phases 0..k, the tallest first, so
  // each phase shows as its own band; the legend shows each phase's own seconds. The server
  // tests round r's model while the sites train round r + 1 (server/round_evaluation.h), so
  // its seconds are not part of round r's wall time: a line beside the bars, not a band.
  function drawRoundTimes(rounds, x) {
    const phases = PHASES.filter((p) => p !== "evaluation" &&
                                        rounds.some((r) => r.phase_seconds && num(r.phase_seconds[p]) !== null));
    const evaluation = rounds.map((r) => (r.phase_seconds ? num(r.phase_seconds.evaluation) : null));
    const bars = uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({size: [0.6, 80]}) : undefined;
    const opts = {scales: {x: {time: false, range: (u, min, max) => [min - 0.5, max + 0.5]}}};
    if (phases.length === 0) {
      drawChart("chart-time", [{label: "round seconds", stroke: "#2563eb", fill: "#2563eb99", paths: bars, points: {show: false}}],
                [x, rounds.map((r) => num(r.elapsed_seconds) ?? num(r.wall_seconds))], opts);
      return;
    }
    const raw = phases.map((p) => rounds.map((r) => (r.phase_seconds ? num(r.phase_seconds[p]) ?? 0 : 0)));
    const stacked = [];
    raw.forEach((values, k) => stacked.push(values.map((v, i) => v + (k ? stacked[k - 1][i] : 0))));
    const series = [], data = [x];
    for (let k = phases.length - 1; k >= 0; k--) {
      const p = phases[k], own = raw[k];
      series.push({label: p, stroke: PHASE_COLORS[p], fill: PHASE_COLORS[p] + "cc", paths: bars, points: {show: false},
                   value: (u, v, si, i) => (i === null || i === undefined ? "" : formatSeconds(own[i]))});
      data.push(stacked[k]);
    }
    if (evaluation.some((v) => v !== null)) {
      series.push({label: "evaluation (beside the next round)", stroke: PHASE_COLORS.evaluation, width: 2,
                   points: {show: true, size: 6}, value: (u, v) => (v === null || v === undefined ? "" : formatSeconds(v))});
      data.push(evaluation);
    }
    drawChart("chart-time", series, data, opts);
    $("chart-time").dataset.evaluation = evaluation.some((v) => v !== null) ? "beside" : "none";
  }

  // ---- tables and facts ----------------------------------------------------------------

  function renderJob(state) {
    const job = state.job || {};
    const rounds = state.summary_rounds || [];
    $("job-name").textContent = job.name || "Cohort";
    document.title = (job.name ? job.name + " - " : "") + (window.COHORT_DATA ? "Cohort report" : "Cohort dashboard");
    const badge = $("job-status");
    badge.textContent = job.status || "unknown";
    badge.className = "badge " + (job.status || "");
    const facts = [(job.job_type || "horizontal") + " job",
                   rounds.length + " of " + (job.rounds_total ?? "?") + " rounds completed"];
    if (num(job.elapsed_seconds) !== null) facts.push("elapsed " + formatSeconds(job.elapsed_seconds));
    const last = rounds[rounds.length - 1];
    if (last && num(last.test_accuracy) !== null) facts.push("test accuracy " + (100 * last.test_accuracy).toFixed(2) + "%");
    $("job-facts").textContent = facts.join(" \u00b7 ");
  }

  function renderRound(state) {
    const r = state.round;
    const section = $("round-section");
    if (!r || !r.number || r.phase === "done" || (state.job && state.job.status !== "running")) { section.hidden = true; return; }
    section.hidden = false;
    $("round-facts").textContent = "round " + r.number + (r.attempt > 1 ? " (attempt " + r.attempt + ")" : "") + ": " + (r.phase || "");
    $("round-sites").replaceChildren(...(r.sites || []).map((s) => text("li", s.site + ": " + s.phase, s.phase)));
  }

  function renderSites(state) {
    const body = $("sites").tBodies[0];
    const rows = (state.sites || []).map((s) => {
      const tr = document.createElement("tr");
      tr.append(text("td", s.site), text("td", s.status, "status-" + s.status));
      const contact = s.last_contact_time ? s.last_contact_time
                    : num(s.last_contact_seconds_ago) !== null ? formatSeconds(s.last_contact_seconds_ago) + " ago" : "";
      tr.append(text("td", contact));
      const td = document.createElement("td");
      const spent = num(s.epsilon_spent), budget = num(s.epsilon_budget);
      if (spent !== null && budget !== null && budget > 0) {
        const bar = document.createElement("span"); bar.className = "budget";
        const fill = document.createElement("span");
        fill.style.width = Math.min(100, (100 * spent) / budget).toFixed(1) + "%";
        if (spent >= budget) fill.className = "spent";
        bar.append(fill); td.append(bar);
        td.append(document.createTextNode(spent.toFixed(3) + " of " + budget.toFixed(3)));
      } else if (spent !== null) {
        td.textContent = spent.toFixed(3) + " spent";
      } else {
        td.textContent = "no DP-SGD spend";
      }
      tr.append(td);
      return tr;
    });
    body.replaceChildren(...rows);
  }

  function targetText(t) {
    if (!t || typeof t !== "object") return "";
    return ["job", "parameter", "participant"].filter((k) => t[k]).map((k) => k + "=" + t[k]).join(" ");
  }

  function renderAudit(state) {
    const body = $("audit").tBodies[0];
    const entries = (state.audit_tail || []).slice().reverse();  // newest first
    body.replaceChildren(...entries.map((e) => {
      const tr = document.createElement("tr");
      let value = e.new === undefined ? "" : JSON.stringify(e.new);
      if (value.length > 240) value = value.slice(0, 240) + "\u2026";
      tr.append(text("td", e.seq), text("td", e.time), text("td", e.actor + (e.role ? " (" + e.role + ")" : "")),
                text("td", e.action), text("td", targetText(e.target)), text("td", value, "value"));
      return tr;
    }));
  }

  function render(state) {
    renderJob(state);
    renderRound(state);
    drawCurves(state.summary_rounds || []);
    renderSites(state);
    renderAudit(state);
    document.body.dataset.rendered = String((state.summary_rounds || []).length);
  }

  function notice(message) {
    const el = $("notice");
    el.hidden = !message;
    el.textContent = message || "";
  }

  // ---- modes ---------------------------------------------------------------------------

  // The token the server printed, from the address's fragment (#token=..., never sent to
  // the server or its logs) or, as a fallback, its query (?token=...).
  function bearerToken() {
    const m = /(?:^#|&)token=([^&]*)/.exec(window.location.hash || "");
    if (m) return decodeURIComponent(m[1]);
    return new URLSearchParams(window.location.search).get("token");
  }

  async function poll() {
    const token = bearerToken();
    try {
      const reply = await fetch("/api/state", {cache: "no-store", headers: token ? {Authorization: "Bearer " + token} : {}});
      if (reply.status === 401 || reply.status === 403) {
        notice("Not authorized: open the address the server printed at start (it ends in #token=...).");
      } else if (!reply.ok) {
        notice("The server answered " + reply.status + "; retrying.");
      } else {
        render(await reply.json());
        notice("");
        $("footer").textContent = "Live: updated " + new Date().toLocaleTimeString() + ", every " + POLL_MS / 1000 + " s.";
      }
    } catch (e) {
      notice("The server cannot be reached (" + e.message + "); retrying.");
    }
    setTimeout(poll, POLL_MS);
  }

  function start() {
    if (window.COHORT_DATA) {
      const data = window.COHORT_DATA;
      render(data);
      const r = data.report || {};
      $("footer").textContent = "Report of " + (r.run_dir || "a run") + ", written " + (r.generated || "") +
                                (r.source ? "; " + r.source : "") + ".";
      return;
    }
    poll();
  }

  window.addEventListener("resize", () => {
    for (const id in charts) charts[id].plot.setSize({width: chartWidth($(id)), height: 260});
  });

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
